"""The report's figures: matplotlib (Agg), one function per figure, each writing one small PNG.

Conventions: fonts of at least 9 pt, 110 dpi, widths of 900–1400 pixels; images in gray stretched
to the 1st–99th percentiles of their (clear) 16-bit values, error maps in a diverging map
symmetric around 0; every axis labelled with its unit (reflectance DN, dB, LR pixels).
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from probav.data.stats import FOURTEEN_BITS, VALUE_BIN, BandStats, hist_edges  # noqa: E402
from probav.scene import NO_DATA, SCALE  # noqa: E402

DPI = 110
BAND_COLOURS = {"RED": "#c0392b", "NIR": "#7d3c98"}
STYLE = {
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9,
    "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11.5, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "savefig.dpi": DPI,
    "figure.dpi": DPI, "image.interpolation": "nearest",
}


def model_colours(names: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


MAX_BYTES = 280_000   # a PNG larger than this is stored with a 256-colour palette


def _save(fig, path: os.PathLike | str, tight: bool = True) -> Path:
    """Save as an RGB PNG, or with a 256-colour palette where that is too large (a third of the size,
    slight banding in smooth colour maps), 128 or 64 colours where even that is, atomically and without a
    timestamp."""
    import io

    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None, pad_inches=0.08,
                facecolor="white", metadata={"Software": None})
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="png", optimize=True)
    for colours in (256, 128, 64):   # fewer colours until it fits (photographic panels need them most)
        if out.tell() <= MAX_BYTES:
            break
        out = io.BytesIO()
        rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, format="png", optimize=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    tmp.write_bytes(out.getvalue())
    os.replace(tmp, path)
    return path


def stretch(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """1st and 99th percentiles of the (masked) values: the display range of a 16-bit image."""
    values = np.asarray(image, np.float64)
    if mask is not None and mask.any():
        values = values[mask]
    values = values[values != NO_DATA]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _counts_axis(ax) -> None:
    """Integer counts: log scale with plain numbers when they span decades, else integer ticks."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    top = max((p.get_height() for p in ax.patches), default=0)
    if top > 60:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _image(ax, image, vmin, vmax, title, cmap="gray"):
    im = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


# --------------------------------------------------------------------------- data figures

def frames_clearance(index: pd.DataFrame, stats: dict[str, BandStats], path) -> Path:
    """Frames per scene and clearance of the LR frames and of the HR, per band."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4))
        ok = index[index["status"] == "ok"] if "status" in index else index
        frames = [ok.loc[ok["band"] == b, "frames"].to_numpy() for b in BAND_COLOURS]
        hi = max([int(f.max()) for f in frames if len(f)] + [10])
        lo = min([int(f.min()) for f in frames if len(f)] + [9])
        bins = np.arange(lo - 0.5, hi + 1.5, 1)
        for band, f in zip(BAND_COLOURS, frames):
            if len(f):
                axes[0].hist(f, bins, alpha=0.6, color=BAND_COLOURS[band],
                             label=f"{band} ({len(f)} scenes, mean {f.mean():.1f})")
        axes[0].set(xlabel="LR frames per scene", ylabel="scenes", title="Frames per scene (every usable scene)")
        axes[0].legend(loc="upper right")
        bins = np.linspace(0.6, 1.0, 21)
        for band, s in stats.items():
            c = np.asarray(s.clearance)
            if len(c):
                axes[1].hist(np.clip(c, 0.6, 1.0), bins, alpha=0.6, color=BAND_COLOURS[band],
                             label=f"{band} ({len(c)} frames)")
        axes[1].set(xlabel="clear fraction of an LR frame (QM)", ylabel="frames",
                    title="Clearance of LR frames (sampled scenes)")
        axes[1].axvline(0.6, color="k", lw=1, ls="--")
        axes[1].legend(loc="upper left")
        bins = np.linspace(0.75, 1.0, 21)
        train = ok[ok["split"] == "train"] if "split" in ok else ok
        for band in BAND_COLOURS:
            h = pd.to_numeric(train.loc[train["band"] == band, "hr_clearance"], errors="coerce").dropna().to_numpy()
            if len(h):
                axes[2].hist(np.clip(h, 0.75, 1.0), bins, alpha=0.6, color=BAND_COLOURS[band],
                             label=f"{band} ({len(h)} HR images)")
        axes[2].axvline(0.75, color="k", lw=1, ls="--")
        axes[2].set(xlabel="clear fraction of the HR (SM)", ylabel="scenes", title="Clearance of HR images (train)")
        axes[2].legend(loc="upper left")
        for ax in axes:
            _counts_axis(ax)
        fig.tight_layout()
        return _save(fig, path)


def value_histograms(stats: dict[str, BandStats], path, title: str) -> Path:
    """LR value histograms per band over the whole 16-bit range: all pixels and clear pixels, with
    the 14-bit limit and the no-data value marked."""
    edges = hist_edges()
    centres = 0.5 * (edges[1:] + edges[:-1])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(stats), figsize=(12.5, 3.6), squeeze=False)
        for ax, (band, s) in zip(axes[0], stats.items()):
            if s.lr_pixels == 0:
                ax.text(0.5, 0.5, "no scene", ha="center", transform=ax.transAxes)
                continue
            ax.fill_between(centres, s.lr_all_hist, step="mid", color="0.75", label="all LR pixels")
            ax.step(centres, s.lr_clear_hist, where="mid", color=BAND_COLOURS.get(band, "C0"),
                    label="clear LR pixels (QM)")
            if s.hr_clear_hist.any():
                ax.step(centres, s.hr_clear_hist / 9.0, where="mid", color="k", lw=0.8,
                        label="clear HR pixels / 9")
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.8)
            ax.axvline(FOURTEEN_BITS, color="C1", ls="--", lw=1)
            ax.axvline(NO_DATA, color="C3", ls=":", lw=1.2)
            ymax = ax.get_ylim()[1]
            ax.text(FOURTEEN_BITS + 600, ymax / 3, "16383\n(14 bits)", color="C1", fontsize=9, va="top")
            ax.text(NO_DATA - 600, ymax / 3, f"65520 no data\n({s.nodata:,} pixels)", color="C3", fontsize=9,
                    va="top", ha="right")
            n = len(s.scenes)
            ax.set(xlim=(0, 66600), xlabel=f"reflectance (DN, bins of {VALUE_BIN})", ylabel="pixels",
                   title=f"{band}: {n} scene{'s' if n != 1 else ''}, {s.lr_pixels / 1e6:.1f} M LR pixels")
            ax.legend(loc="upper center", bbox_to_anchor=(0.55, 1.0))
        fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path)


def shifts(run: dict[str, BandStats], real: dict[str, BandStats] | None, path) -> Path:
    """Estimated shifts of the frames relative to the clearest frame of their scene; registration
    error against the simulator's truth when there is one."""
    run_tab = pd.concat([s.shift_table().assign(band=b) for b, s in run.items()], ignore_index=True)
    real_tab = (pd.concat([s.shift_table().assign(band=b) for b, s in real.items()], ignore_index=True)
                if real else pd.DataFrame())
    has_truth = len(run_tab) and run_tab["true_dy"].notna().any()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
        ax = axes[0]
        for band in BAND_COLOURS:
            t = run_tab[(run_tab["band"] == band) & run_tab["ok"]] if len(run_tab) else run_tab
            if len(t):
                ax.scatter(t["dx"], t["dy"], s=9, alpha=0.55, color=BAND_COLOURS[band], lw=0,
                           label=f"this run, {band} ({len(t)} frames)")
        if len(real_tab):
            t = real_tab[real_tab["ok"]]
            ax.scatter(t["dx"], t["dy"], s=28, marker="x", color="k", lw=1,
                       label=f"real sample ({len(t)} frames)")
        for r in (1, 2):
            ax.add_patch(plt.Circle((0, 0), r, fill=False, ls="--", lw=0.8, color="0.4"))
        lim = 2.5
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="dx (LR pixels)", ylabel="dy (LR pixels)",
               title="Shift of each frame onto the clearest frame")
        ax.legend(loc="lower left", fontsize=8.5)
        ax = axes[1]
        if has_truth:
            t = run_tab[run_tab["ok"] & run_tab["true_dy"].notna()]
            err = np.hypot(t["dy"] - t["true_dy"], t["dx"] - t["true_dx"]) * SCALE
            bins = np.linspace(0, max(0.3, 1.2 * float(np.percentile(err, 99))) if len(err) else 1, 31)
            ax.hist(np.clip(err, 0, bins[-1]), bins, color="C0", alpha=0.8)
            ax.set(xlabel="registration error (HR pixels = LR pixels × 3)", ylabel="frames",
                   title="Estimated against true shift (simulator)")
            if len(err):
                ax.axvline(np.median(err), color="k", ls="--", lw=1)
                ax.text(np.median(err), ax.get_ylim()[1] * 0.95, f"  median {np.median(err):.2f}", va="top")
        else:
            bins = np.linspace(0, 2.5, 26)
            for label, tab, colour in (("this run", run_tab, "C0"), ("real sample", real_tab, "k")):
                if len(tab):
                    t = tab[tab["ok"]]
                    ax.hist(np.hypot(t["dy"], t["dx"]), bins, density=True, histtype="step", lw=1.5, color=colour,
                            label=f"{label} ({len(t)} frames)")
            ax.set(xlabel="shift magnitude (LR pixels)", ylabel="density", title="Shift magnitudes")
            ax.legend()
        fig.tight_layout()
        return _save(fig, path)


MASK_RGBA = (0.0, 0.85, 0.95, 0.5)   # masked pixels (QM or SM) tinted cyan, half transparent


def _masked_overlay(ax, mask: np.ndarray) -> None:
    """Tint the pixels where ``mask`` is False (clouds) over what the axes show."""
    if not mask.all():
        overlay = np.zeros(mask.shape + (4,))
        overlay[~mask] = MASK_RGBA
        ax.imshow(overlay, interpolation="nearest")


def scene_pair(rows: list[tuple[str, object]], path) -> Path:
    """One row per (label, scene): its cloudiest usable LR frame, the same with the QM's clouds tinted, the count
    of clear frames per pixel, and the HR with the SM's clouds tinted (the clearest frame ×3 under the SM where
    there is no HR). Grey ranges from clear pixels only."""
    from matplotlib.ticker import MaxNLocator

    from probav.report.cloudy import cloudiest_usable

    rows = [(label, scene) for label, scene in rows if scene is not None]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(rows), 4, figsize=(12.6, 3.3 * len(rows)), squeeze=False)
        for (label, scene), ax in zip(rows, axes):
            k = cloudiest_usable(scene)
            frame_no = int(scene.ids[k])
            vmin, vmax = stretch(scene.lr[k], scene.qm[k])
            _image(ax[0], scene.lr[k], vmin, vmax,
                   f"{label}: {scene.name} {scene.band}\nLR{frame_no:03d}, {scene.clearance[k]:.0%} clear (300 m px)")
            _image(ax[1], scene.lr[k], vmin, vmax, f"QM{frame_no:03d}: masked pixels tinted")
            _masked_overlay(ax[1], scene.qm[k])
            counts = scene.qm.sum(axis=0)
            im = _image(ax[2], counts, 0, scene.frames, f"clear frames per pixel (of {scene.frames})", cmap="viridis")
            cb = fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.03)
            cb.set_label("frames")
            cb.locator = MaxNLocator(integer=True)
            cb.update_ticks()
            if scene.hr is not None:
                vmin, vmax = stretch(scene.hr, scene.sm)
                _image(ax[3], scene.hr, vmin, vmax, f"HR (100 m px), {scene.sm.mean():.0%} clear in its SM")
                _masked_overlay(ax[3], scene.sm)
            elif scene.sm is not None:
                c = int(np.argmax(scene.clearance))
                big = np.kron(scene.lr[c], np.ones((SCALE, SCALE)))
                vmin, vmax = stretch(scene.lr[c], scene.qm[c])
                _image(ax[3], big, vmin, vmax, f"no HR (test scene); its SM ({scene.sm.mean():.0%} clear)\n"
                                               f"over LR{int(scene.ids[c]):03d} ×3")
                _masked_overlay(ax[3], scene.sm)
            else:
                ax[3].set_axis_off()
                ax[3].text(0.5, 0.5, "no HR, no SM", ha="center", transform=ax[3].transAxes)
        fig.tight_layout()
        return _save(fig, path)


def normalised_spectrum(freq: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``power`` divided by its mean over the rings below the LR Nyquist frequency (``freq`` ≤ 0.5 cycles per
    LR pixel): curves of different brightness and resolution compare by shape, and an HR's power above that
    frequency reads against the same scale."""
    below = np.asarray(freq) <= 0.5
    return np.asarray(power, np.float64) / float(np.mean(np.asarray(power)[below]))


def distributions(run: dict[str, BandStats], real: dict[str, BandStats] | None, run_norms: dict,
                  real_norms: dict, path, run_label: str, real_label: str) -> Path:
    """Per band: clear LR value density, radially averaged power spectra of clear frames and HR
    images, and the baseline cPSNR (norm) distribution, for the run's data and the real data."""
    edges = hist_edges()
    centres = 0.5 * (edges[1:] + edges[:-1])
    bands = list(run)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(bands), 3, figsize=(13.5, 3.5 * len(bands)), squeeze=False)
        for row, band in zip(axes, bands):
            colour = BAND_COLOURS.get(band, "C0")
            sources = [(run_label, run.get(band), run_norms.get(band), colour, "-")]
            if real:
                sources.append((real_label, real.get(band), real_norms.get(band), "k", "--"))
            ax = row[0]
            for label, s, _, c, ls in sources:
                if s is not None and s.lr_clear_hist.any():
                    dens = s.lr_clear_hist / s.lr_clear_hist.sum() / VALUE_BIN
                    ax.plot(centres, dens, color=c, ls=ls,
                            label=f"{label} ({len(s.scenes)} scene{'s' if len(s.scenes) != 1 else ''})")
            ax.set(xlim=(0, 20000), xlabel="clear LR reflectance (DN)", ylabel="density (1/DN)",
                   title=f"{band}: values of clear LR pixels")
            ax.legend()
            ax = row[1]
            missing = []
            for label, s, _, c, ls in sources:
                drawn = False
                for which, marker in (("lr", "o"), ("hr", "s")):
                    spec = s.mean_spectrum(which) if s is not None else None
                    if spec is not None:
                        # HR: cycles per HR pixel × 3 = cycles per LR pixel
                        f = s.spectrum_freq if which == "lr" else s.spectrum_freq * SCALE
                        n = len(s.lr_spectra if which == "lr" else s.hr_spectra)
                        ax.loglog(f, normalised_spectrum(f, spec), color=c, ls=ls, marker=marker, ms=3,
                                  label=f"{label} {which.upper()} ({n} images)")
                        drawn = True
                if not drawn:
                    missing.append(label)
            ax.axvline(0.5, color="0.5", lw=0.8, ls=":")
            if missing:
                ax.text(0.03, 0.03, "no fully clear image: " + ", ".join(missing), transform=ax.transAxes,
                        fontsize=8.5, color="0.25")
            ax.set(xlabel="spatial frequency (cycles per LR pixel; LR Nyquist = 0.5)",
                   ylabel="power / mean power below LR Nyquist",
                   title=f"{band}: spectral shape of fully clear images")
            ax.legend(fontsize=8, loc="upper right")
            ax = row[2]
            all_n = [n for _, _, n, _, _ in sources if n is not None and len(n)]
            if all_n:
                lo = min(float(n.min()) for n in all_n)
                hi = max(float(n.max()) for n in all_n)
                bins = np.linspace(np.floor(lo), np.ceil(hi) + 1e-9, 26)
                for label, _, n, c, ls in sources:
                    if n is not None and len(n):
                        ax.hist(n, bins, density=True, histtype="step", lw=1.5, color=c, ls=ls,
                                label=f"{label} ({len(n)}, mean {n.mean():.2f})")
                ax.legend(fontsize=8.5)
            else:
                ax.text(0.5, 0.5, "no norm.csv", ha="center", transform=ax.transAxes)
            ax.set(xlabel="baseline cPSNR, norm.csv (dB)", ylabel="density (1/dB)", title=f"{band}: scene norms")
        fig.tight_layout()
        return _save(fig, path)


# --------------------------------------------------------------------------- result figures

def paired_scores(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-scene scores side by side: one row per scene scored by every model, one column per model ordered
    from the worst mean score to the best (a scene some model lacks is left out), and a ``band`` column."""
    order = sorted(tables, key=lambda m: (-tables[m]["score"].mean(), m))
    wide = pd.concat({m: tables[m].set_index("scene")["score"] for m in order}, axis=1).dropna()
    first = tables[order[0]].set_index("scene")
    wide.insert(0, "band", first["band"].reindex(wide.index) if "band" in first else "")
    return wide.sort_index()


SLOPES_CAPTION = ("Left: each line is one dev scene's score under every model, from the worst mean score to the "
                  "best (colour: band); black diamonds: the mean, the official score. Right: the two best models "
                  "paired scene by scene, blue where the best scores better. Dashed: the baseline (1).")


def score_slopes(tables: dict[str, pd.DataFrame], path) -> Path:
    """Paired per-scene scores. Left: every model from the worst mean to the best, each dev scene a line through
    its scores (colour: band), the mean in black. Right: the runner-up against the best, each scene a line,
    blue where the best model scores better on it, orange where worse."""
    wide = paired_scores(tables)
    models = [c for c in wide.columns if c != "band"]
    x = np.arange(len(models))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(13.0, 4.8), gridspec_kw={"width_ratios": [2.6, 1]})
        ax = axes[0]
        for _, row in wide.iterrows():
            ax.plot(x, row[models].to_numpy(float), "-", lw=0.8, alpha=0.45,
                    color=BAND_COLOURS.get(row["band"], "0.5"))
        ax.plot(x, wide[models].mean().to_numpy(), "-D", color="k", lw=2, ms=5, label="mean (the official score)")
        for band, colour in BAND_COLOURS.items():
            n = int((wide["band"] == band).sum())
            if n:
                ax.plot([], [], color=colour, lw=1, label=f"a {band} scene ({n})")
        ax.axhline(1.0, color="C3", ls="--", lw=1)
        ax.set_xticks(x, models, rotation=20, ha="right")
        ax.set(ylabel="score per dev scene (lower is better)",
               title=f"Every dev scene through every model ({len(wide)} scenes), worst mean → best")
        ax.legend(loc="lower left", fontsize=8.5)
        ax = axes[1]
        if len(models) >= 2:
            second, best = models[-2], models[-1]
            a, b = wide[second].to_numpy(float), wide[best].to_numpy(float)
            better = b < a
            for ya, yb, good in zip(a, b, better):
                ax.plot([0, 1], [ya, yb], "-o", ms=3, lw=1, alpha=0.75, color="#2e6fb7" if good else "#e67e22")
            ax.set_xticks([0, 1], [second, best])
            ax.set_xlim(-0.3, 1.3)
            ax.axhline(1.0, color="C3", ls="--", lw=1)
            ax.set_title(f"{best} better on {int(better.sum())} of {len(a)} scenes\n"
                         f"(median difference {np.median(b - a):+.4f})")
            ax.set_ylabel("score per dev scene")
        else:
            ax.set_axis_off()
        for a_ in axes:
            a_.grid(axis="x", visible=False)
        fig.tight_layout()
        return _save(fig, path)


def robust_limits(values: np.ndarray, reach: float = 3.0) -> tuple[float, float]:
    """Axis limits that hold every value within ``reach`` interquartile ranges of the quartiles (so one outlier
    does not squash the rest), with a small margin."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    q1, q3 = np.percentile(v, [25, 75])
    iqr = max(q3 - q1, 1e-6)
    lo, hi = max(v.min(), q1 - reach * iqr), min(v.max(), q3 + reach * iqr)
    pad = 0.06 * max(hi - lo, 1e-6)
    return float(lo - pad), float(hi + pad)


AGAINST_CAPTION = ("Every dev scene of every model as a dot (the best model's larger); legend: each model's Spearman ρ "
                   "between the score and the clearance, and the number of frames, over the scenes; the title gives "
                   "the |ρ| below which a correlation is within chance (two-sided p ≥ 0.05). Scores beyond three "
                   "interquartile ranges of the quartiles are drawn as triangles on the axis edge. Dashed: the baseline.")


def chance_rho(scenes: int, alpha: float = 0.05) -> float:
    """The |ρ| a rank correlation over ``scenes`` must exceed for a two-sided p below ``alpha`` (the t
    approximation scipy's spearmanr uses)."""
    from scipy.stats import t

    df = scenes - 2
    if df < 1:
        return float("nan")
    q = float(t.ppf(1 - alpha / 2, df))
    return q / float(np.sqrt(df + q * q))


def score_against(tables: dict[str, pd.DataFrame], best: str, path) -> Path:
    """Score against the mean clearance of the LR frames and against the number of frames: every scene of every
    model as a dot (the best model's larger), each model's Spearman ρ in the legend; no fitted or binned line,
    which a few dozen scenes cannot support. The y axis holds the bulk of the scores; outliers sit on its edge."""
    from scipy.stats import spearmanr

    colours = model_colours(sorted(tables))
    order = sorted(tables, key=lambda m: (m == best, m))  # the best model drawn last, on top
    lo, hi = robust_limits(np.concatenate([tables[m]["score"].to_numpy(float) for m in order]))
    columns = (("clearance", "mean clear fraction of the LR frames (QM)", "Score against clearance"),
               ("frames", "LR frames in the scene", "Score against the number of frames"))

    def rho(tab, column):
        x, y = tab[column].to_numpy(float), tab["score"].to_numpy(float)
        return spearmanr(x, y).statistic if len(np.unique(x)) > 2 and len(np.unique(y)) > 2 else float("nan")

    scenes = len(tables[best])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.3), sharey=True)
        for ax, (column, label, title) in zip(axes, columns):
            for name in order:
                tab = tables[name]
                x, y = tab[column].to_numpy(float), tab["score"].to_numpy(float)
                big = name == best
                rhos = ", ".join(f"{r:+.2f}" if np.isfinite(r) else "n/a" for r in (rho(tab, c) for c, _, _ in columns))
                inside = (y >= lo) & (y <= hi)
                ax.scatter(x[inside], y[inside], s=24 if big else 10, color=colours[name], alpha=0.9 if big else 0.45,
                           lw=0, zorder=3 if big else 2, label=f"{name}{' (best)' if big else ''}: {rhos}")
                for edge, sel, marker in ((hi, y > hi, "^"), (lo, y < lo, "v")):
                    if sel.any():
                        ax.scatter(x[sel], np.full(sel.sum(), edge), marker=marker, s=40 if big else 22,
                                   color=colours[name], zorder=4, clip_on=False)
            ax.axhline(1.0, color="C3", ls="--", lw=1)
            ax.set(xlabel=label, title=title, ylim=(lo, hi))
        axes[0].set_ylabel("score per dev scene (lower is better)")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False,
                       title="model: Spearman ρ with\nclearance, frames")
        chance = chance_rho(scenes)
        fig.suptitle(f"{scenes} dev scenes" + (f": |ρ| below {chance:.2f} is within chance (p ≥ 0.05)"
                                               if np.isfinite(chance) else ": too few for a correlation"))
        fig.tight_layout()
        return _save(fig, path)


def comparison(scene, predictions: dict[str, np.ndarray | None], cpsnrs: dict[str, float], best: str,
               error: np.ndarray | None, path, title: str, crop: tuple[int, int, int] | None = None) -> Path:
    """One scene: clearest LR frame, every model's SR, the HR and the best model's error map, on a
    crop of the HR grid (``crop`` = (y, x, size) in HR pixels), all with the HR's display range.

    Manual layout: equal square panels row by row, the error map always in the last cell (next to
    its colour bar in the right margin), the grey colour bar in the right margin of the first row."""
    y0, x0, size = crop or (0, 0, scene.hr.shape[0])
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    lr_window = (slice(y0 // SCALE, (y0 + size) // SCALE), slice(x0 // SCALE, (x0 + size) // SCALE))
    vmin, vmax = stretch(scene.hr[window], scene.sm[window])
    k = int(np.argmax(scene.clearance))
    panels = [(f"LR{k:03d} (clearest frame)", np.kron(scene.lr[k][lr_window], np.ones((SCALE, SCALE))), None)]
    for name, image in predictions.items():
        panels.append((name, None if image is None else image[window], cpsnrs.get(name)))
    panels.append(("HR (target)", scene.hr[window], None))
    n = len(panels) + 1
    rows = int(np.ceil(n / 5))
    cols = int(np.ceil(n / rows))
    side = max(size / DPI, 1.6)  # the crop at one screen pixel per HR pixel
    gap, head, right, top = 0.12, 0.5, 1.3, 0.45
    width = cols * side + (cols - 1) * gap + right + 0.1
    height = rows * (side + head) + top + 0.1
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(width, height))

        def cell(r, c, dx=0.0, w=side):
            left = 0.05 + c * (side + gap) + dx
            bottom = height - top - (r + 1) * (side + head) + 0.05
            return fig.add_axes([left / width, bottom / height, w / width, side / height])

        im = None
        for (label, image, cpsnr), (r, c) in zip(panels, cells):
            ax = cell(r, c)
            if image is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{label}\nnot available", ha="center", va="center", transform=ax.transAxes)
                continue
            im = _image(ax, image, vmin, vmax, label if cpsnr is None else f"{label}\n{cpsnr:.2f} dB")
        cax = fig.add_axes([(width - right + 0.15) / width, (height - top - side - head + 0.05) / height,
                            0.14 / width, side / height])
        if im is not None:
            cb = fig.colorbar(im, cax=cax)
            cb.set_label("reflectance (DN)")
        r, c = cells[-1]
        ax = cell(r, c)
        if error is not None:
            err = error[window]
            lim = float(np.nanpercentile(np.abs(err), 99)) if np.isfinite(err).any() else 1.0
            cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.6")
            im_err = _image(ax, np.ma.masked_invalid(err), -max(lim, 1), max(lim, 1),
                            f"error of {best}\n(SR − HR, bias removed)", cmap=cmap)
            if rows > 1:
                cax = fig.add_axes([(width - right + 0.15) / width,
                                    (height - top - rows * (side + head) + 0.05) / height, 0.14 / width, side / height])
            else:  # one row: the grey bar takes the upper half, the error bar the lower half
                cax.set_position([cax.get_position().x0, cax.get_position().y0 + cax.get_position().height / 2,
                                  cax.get_position().width, cax.get_position().height / 2])
                cax = fig.add_axes([(width - right + 0.15) / width, (height - top - side - head + 0.05) / height,
                                    0.14 / width, side / 2 / height])
            cb = fig.colorbar(im_err, cax=cax)
            cb.set_label("SR − HR (DN)")
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no error map\n(best model not available)", ha="center", va="center",
                    transform=ax.transAxes)
        fig.suptitle(title, y=1 - 0.12 / height, va="top")
        return _save(fig, path, tight=False)


def training_curves(curves: dict[str, dict[str, pd.DataFrame]], path) -> Path:
    """DVCLive metrics per model: losses (log scale) on the top row, other metrics below."""
    from matplotlib.ticker import MaxNLocator

    names = list(curves)
    has_other = any(any("loss" not in m for m in c) for c in curves.values())
    rows = 2 if has_other else 1
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, len(names), figsize=(min(max(3.4 * len(names), 8.5), 13.0), 3.3 * rows), squeeze=False)
        for col, name in enumerate(names):
            for metric, frame in sorted(curves[name].items()):
                row = 0 if "loss" in metric else 1
                if row >= rows:
                    continue
                ax = axes[row, col]
                ax.plot(frame["step"], frame["value"], "-o", ms=2.5, lw=1.2, label=metric)
            for row in range(rows):
                ax = axes[row, col]
                if ax.lines:
                    ax.legend(fontsize=8.5)
                    if row == 0 and all((l.get_ydata() > 0).all() for l in ax.lines):
                        ax.set_yscale("log")
                else:
                    ax.text(0.5, 0.5, "no metric", ha="center", transform=ax.transAxes)
                ax.set_xlabel("step (epoch)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[0, col].set_title(name)
            axes[0, col].set_ylabel("loss")
            if rows > 1:
                axes[1, col].set_ylabel("dev metric (dB or score)")
        fig.tight_layout()
        return _save(fig, path)


def effect(points: pd.DataFrame, x: str, path, xlabel: str, title: str, marker=None) -> Path:
    """Mean score against one setting (``points``: columns model, ``x``, score); ``marker``: the
    run's own setting, drawn as a vertical line."""
    colours = model_colours(sorted(points["model"].unique()))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 3.8))
        for name, rows in points.groupby("model", sort=True):
            rows = rows.sort_values(x)
            ax.plot(rows[x], rows["score"], "-o", color=colours[name], label=name)
        ax.axhline(1.0, color="C3", ls="--", lw=1, label="official baseline (1)")
        if isinstance(marker, (int, float)) and marker > 0:
            ax.axvline(marker, color="0.4", ls=":", lw=1.2, label=f"this run's setting ({marker})")
        ax.set(xlabel=xlabel, ylabel="mean score (lower is better)", title=title)
        ax.legend()
        fig.tight_layout()
        return _save(fig, path)


def zoom(scene, predictions: dict[str, np.ndarray | None], errors: dict[str, np.ndarray | None],
         cpsnrs: dict[str, float], window: tuple[int, int, int], path, title: str) -> Path:
    """One small window (``window`` = (y, x, size) in HR pixels) enlarged: top row the clearest LR frame, every
    model's SR and the HR in one grey range (the HR's clear 1st–99th percentiles); bottom row each model's
    error (SR − HR at the metric's best shift, bias removed) in one shared diverging range, grey where the SM
    is cloudy, with its RMS in the window."""
    y0, x0, size = window
    win = (slice(y0, y0 + size), slice(x0, x0 + size))
    lr_win = (slice(y0 // SCALE, (y0 + size) // SCALE), slice(x0 // SCALE, (x0 + size) // SCALE))
    vmin, vmax = stretch(scene.hr[win], scene.sm[win])
    k = int(np.argmax(scene.clearance))
    names = [n for n in predictions if predictions[n] is not None]
    errs = {n: errors[n][win] for n in names if errors.get(n) is not None}
    finite = [np.abs(e[np.isfinite(e)]) for e in errs.values() if np.isfinite(e).any()]
    lim = max(float(np.percentile(np.concatenate(finite), 99)), 1.0) if finite else 1.0
    cols = len(names) + 2
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.6")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, cols, figsize=(1.5 * cols + 0.9, 3.9), squeeze=False,
                                 gridspec_kw={"wspace": 0.06, "hspace": 0.32})
        _image(axes[0, 0], np.kron(scene.lr[k][lr_win], np.ones((SCALE, SCALE))), vmin, vmax, f"LR{k:03d}\n(clearest)")
        im = None
        for col, name in enumerate(names, start=1):
            cp = cpsnrs.get(name)
            im = _image(axes[0, col], predictions[name][win], vmin, vmax,
                        name if cp is None else f"{name}\n{cp:.2f} dB")
        _image(axes[0, -1], scene.hr[win], vmin, vmax, "HR\n(target)")
        for ax in (axes[1, 0], axes[1, -1]):
            ax.set_axis_off()
        im_err = None
        for col, name in enumerate(names, start=1):
            ax = axes[1, col]
            if name not in errs:
                ax.set_axis_off()
                continue
            e = errs[name]
            rms = float(np.sqrt(np.nanmean(e ** 2))) if np.isfinite(e).any() else float("nan")
            im_err = _image(ax, np.ma.masked_invalid(e), -lim, lim, f"error, RMS {rms:.0f}", cmap=cmap)
        axes[1, 0].text(0.5, 0.5, f"{size}×{size} HR px\n({size * 100 / 1000:.1f} km)\nat y {y0}, x {x0}",
                        ha="center", va="center", transform=axes[1, 0].transAxes, fontsize=9)
        if im is not None:
            cb = fig.colorbar(im, ax=axes[0, :].tolist(), fraction=0.015, pad=0.01)
            cb.set_label("DN")
        if im_err is not None:
            cb = fig.colorbar(im_err, ax=axes[1, :].tolist(), fraction=0.015, pad=0.01)
            cb.set_label("SR − HR (DN)")
        fig.suptitle(title, y=1.07)
        return _save(fig, path)


def spectra(curves: dict[str, dict[str, dict]], colours: dict[str, str], path, title: str) -> Path:
    """Per scene (a column): top, the radially averaged power of each model's SR and of the HR; bottom, the
    power of each model's error over the HR's power. Frequencies in cycles per LR pixel, the LR Nyquist
    frequency (0.5) dotted; above it only what the frames' aliasing carries can be recovered."""
    scenes = list(curves)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(scenes), figsize=(min(4.3 * len(scenes) + 1.8, 13.0), 6.4), squeeze=False,
                                 sharex=True, gridspec_kw={"height_ratios": [1.25, 1]})
        for col, scene in enumerate(scenes):
            top, bottom = axes[0, col], axes[1, col]
            drawn_hr = False
            for name, s in curves[scene].items():
                f = s["freq"]
                keep = f > 0.02
                if not drawn_hr:
                    top.loglog(f[keep], s["hr"][keep], color="k", lw=2.2, label="HR (target)")
                    drawn_hr = True
                top.loglog(f[keep], s["sr"][keep], color=colours.get(name, "C0"), lw=1.1, label=name)
                bottom.loglog(f[keep], s["error"][keep] / s["hr"][keep], color=colours.get(name, "C0"), lw=1.1)
            for ax in (top, bottom):
                ax.axvline(0.5, color="0.3", ls=":", lw=1.2)
            top.text(0.52, 0.97, "LR Nyquist", transform=top.get_xaxis_transform(), va="top", fontsize=8.5,
                     color="0.3")
            bottom.axhline(1.0, color="C3", ls="--", lw=1)
            top.set_title(scene)
            bottom.set_xlabel("spatial frequency (cycles per LR pixel)")
            if col == 0:
                top.set_ylabel("power (DN²)")
                bottom.set_ylabel("error power / HR power\n(≥ 1: detail not recovered)")
        handles = {}
        for ax in axes[0]:
            for line in ax.get_lines():
                if not line.get_label().startswith("_"):
                    handles.setdefault(line.get_label(), line)
        axes[0, -1].legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path)
