"""Stream-wide self-calibration of the focal length, for inputs without intrinsics.

Each self-calibrating window's bundle adjustment says what its observations alone tell about the
focal length: an estimate of log f and its standard deviation, from the curvature of the cost in
log f with every pose and point re-optimised (``bundle.FocalEvidence``). One window of forward
motion says little (a wide valley); several windows together say more. ``StreamFocal`` keeps the
stream's estimate:

- **Combine.** Inverse-variance weighted mean of the windows' log focal lengths, after dropping,
  one at a time, the window that disagrees most with the weighted mean of the others while that
  disagreement exceeds ``outlier_sigmas`` (its sigma and the others' combined; only among three or
  more windows): a window that locked onto a wrong valley with a small sigma cannot move the
  estimate, and cannot make the honest windows look like outliers either. The combined sigma is inflated by the Birge ratio
  (sqrt of chi^2 per degree of freedom, when above 1): windows that disagree more than their sigmas
  say are believed less. Every window's sigma is floored at ``min_window_sigma``: no window knows its
  focal better than what the model leaves out (principal point at the centre, no distortion).
- **Feed.** The next window starts from the estimate and refines the focal with the estimate as a
  Gaussian prior (its sigma, never below ``min_prior_sigma``); the window's evidence has that prior
  taken out again before it is combined, so no window is counted twice.
- **Fix.** Once at least ``min_windows`` windows agree (no outlier among them, Birge ratio at most
  ``max_birge``) and the combined sigma is at most ``fix_sigma``, the focal is fixed: later
  windows are solved with known intrinsics (the stream's). Nothing moves it after that.
- **Plausible.** A window's estimate shorter than ``min_focal_rel`` of the longest side (a view wider
  than rectilinear lenses see) is listed and not used: its pinhole has taken a lens' bend for a wide
  view (barrel distortion on forward motion reads so).
- **Stated focal.** A focal length the input states (EXIF, QuickTime: ``Frame.focal_hint``) enters
  as the first entry, with sigma ``stated_sigma``: the first window starts from it (with no prior in
  its adjustment, since no window has told yet what a prior of that sigma weighs), a window whose
  motion leaves the focal free is held at it, and it is combined with the windows' evidence like
  theirs, so among three or more entries windows that disagree with it drop it as an outlier (a crop
  or a digital zoom). It does not count towards ``min_windows``.

The principal point stays at the image centre: each window reports what its observations say about
it (estimate and sigma, for run.json), but only a window that moved it (``SfmConfig.
principal_point_gate``, off by default: that sigma is overconfident on real images) makes the stream's
principal point (inverse-variance mean per axis). Focal lengths are kept relative to the longest image
side, so the state is the same at any model resolution and in either orientation (a portrait photo of
the same camera keeps the estimate; principal points combine only among windows of the latest
window's orientation, and the other orientation takes the centre, since which way the camera was
turned is unknown); a change of aspect ratio starts over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _aspect(size: tuple[int, int]) -> float:
    """Longest over shortest side of an image of ``size`` (W, H): the same for either orientation."""
    return max(size) / min(size)


@dataclass
class StreamFocalConfig:
    """How the stream's focal estimate is combined and when it is fixed (see the module docstring)."""

    enabled: bool = True
    min_window_sigma: float = 0.005  # floor of a window's relative focal sigma
    outlier_sigmas: float = 3.0  # a window farther than this from the weighted median is left out
    min_windows: int = 2  # windows that must agree before the focal is fixed
    max_birge: float = 2.0  # ... and agree this well (sqrt of chi^2 per degree of freedom)
    fix_sigma: float = 0.01  # ... to this relative sigma of the combined estimate
    min_prior_sigma: float = 0.02  # the prior handed to a window is never tighter than this
    max_prior_sigma: float = 0.5  # a window's evidence looser than this is not used at all
    # Nor an estimate under this share of the longest side: a horizontal field of view of
    # 2 atan(1 / (2 x 0.3)) = 118 degrees, wider than rectilinear lenses see.
    min_focal_rel: float = 0.3
    stated_sigma: float = 0.05  # relative sigma of a focal the input states (EXIF: whole millimetres, conventions)

    def plausible(self, log_rel: float) -> bool:
        """Whether a rectilinear lens can have the focal length log(f / longest side) = ``log_rel``
        (``min_focal_rel``)."""
        return self.min_focal_rel <= 0 or bool(log_rel >= np.log(self.min_focal_rel))


@dataclass
class WindowFocal:
    """One window's evidence on the focal length: log(f / longest side) and its sigma."""

    window: int
    log_rel: float
    sigma: float
    noise_px2: float
    used: bool = True  # False once judged an outlier
    # What the window's observations say about the principal point: its offset from the image centre
    # over the longest side (x, y) and its sigma; and the axes the window moved it on (only those count)
    principal_rel: np.ndarray | None = None
    principal_sigma: np.ndarray | None = None
    principal_applied: np.ndarray | None = None
    portrait: bool = False  # H > W: principal points combine only among windows of one orientation
    stated: bool = False  # not a window: the focal the input stated (``StreamFocal.state``)
    # The lens its last adjustment tried (``recon.default.sfm.WindowSfm._lens_pass``: kept, radial_k1,
    # its sigma, how far it bends the image corner in px); when kept, the focal above is read through it
    lens: dict | None = None
    # The window was solved through a lens its pinhole solve had read as a wide view
    # (recon/default/lens_search.py): that pinhole's focal is no evidence
    misread: bool = False

    def plausible(self, config: StreamFocalConfig) -> bool:
        """Whether a rectilinear lens can have this focal length (a stated one is taken as stated)."""
        return self.stated or config.plausible(self.log_rel)


@dataclass
class StreamFocal:
    """The stream's focal-length estimate; ``reset`` forgets it (a new stream)."""

    config: StreamFocalConfig = field(default_factory=StreamFocalConfig)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.windows: list[WindowFocal] = []
        self.aspect: float | None = None  # longest / shortest side of the images the estimate belongs to
        self.portrait: bool | None = None  # H > W in the last window that told something
        self.log_rel: float | None = None  # combined log(f / longest side)
        self.sigma: float | None = None  # its sigma (log units, ~ relative error)
        self.birge = 1.0
        self.fixed_at: int | None = None  # the window whose evidence fixed it (windows after it use it)
        self.principal_rel = np.zeros(2)  # combined principal point offset from the centre / longest side
        self.principal_sigma = np.full(2, np.nan)  # its sigma per axis; NaN: no window estimated it
        self.held_rel: float | None = None  # the focal / longest side windows were held at, their own
        # evidence leaving it free (model.DefaultWindowModel), while the stream had no estimate

    @property
    def fixed(self) -> bool:
        return self.fixed_at is not None

    # ---- what a window gets -----------------------------------------------------------
    def _matches(self, size: tuple[int, int]) -> bool:
        if self.aspect is not None and abs(_aspect(size) - self.aspect) > 1e-3 * self.aspect:
            self.reset()  # another camera or crop: the estimate does not carry over
        return self.log_rel is not None

    def intrinsics(self, size: tuple[int, int]) -> np.ndarray | None:
        """The stream's K ``[3, 3]`` at ``size`` (W, H), or None; the principal point at the centre unless
        windows moved it (``SfmConfig.principal_point_gate``, off by default)."""
        if not self.config.enabled or not self._matches(size):
            return None
        W, H = size
        f = float(np.exp(self.log_rel)) * max(W, H)
        offset = self.principal_rel if (H > W) == self.portrait else np.zeros(2)
        cx, cy = np.array([(W - 1) / 2, (H - 1) / 2]) + offset * max(W, H)
        return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64)

    def prior(self, size: tuple[int, int]) -> tuple[float, float] | None:
        """``(focal px, weight)`` for a self-calibrating window's bundle adjustment (``BundleProblem.
        focal_prior``): the cost gains ``0.5 * weight * (log f - log focal)^2`` with weight the
        noise the windows' sigmas assumed (px^2, ``bundle.FocalEvidence.noise_px2``) over the
        prior's variance, so that the prior counts like the windows' evidence did."""
        K = self.intrinsics(size)
        if K is None or self.fixed:
            return None
        noises = [w.noise_px2 for w in self.windows if w.used and not w.stated]
        if not noises:  # only a stated focal: what a prior weighs is not known yet
            return None
        sigma = max(self.sigma, self.config.min_prior_sigma)
        return float(K[0, 0]), float(np.median(noises)) / sigma ** 2

    @property
    def stated(self) -> WindowFocal | None:
        """The entry of the focal the input stated, if any."""
        return next((w for w in self.windows if w.stated), None)

    def state(self, size: tuple[int, int], focal_px: float) -> None:
        """The focal length (px at ``size`` (W, H)) the input states, e.g. a photo's EXIF; kept only
        as the first statement for images of this shape, and only before the focal is fixed."""
        if not self.config.enabled or not np.isfinite(focal_px) or focal_px <= 0:
            return
        self._matches(size)  # another shape of image starts over
        if self.fixed or self.stated is not None:
            return
        W, H = size
        self.aspect = _aspect(size)
        self.portrait = H > W if self.portrait is None else self.portrait
        self.windows.insert(0, WindowFocal(-1, float(np.log(focal_px / max(W, H))), self.config.stated_sigma,
                                           float("nan"), portrait=H > W, stated=True))
        self._combine()

    # ---- what a window tells ----------------------------------------------------------
    def add(self, window: int, size: tuple[int, int], log_focal_px: float, sigma: float, noise_px2: float,
            principal: tuple[np.ndarray, np.ndarray] | None = None, principal_applied: np.ndarray | None = None,
            principal_used_px: np.ndarray | None = None, lens: dict | None = None, misread: bool = False) -> bool:
        """Combine window ``window``'s evidence (log focal in px at ``size``, its sigma in log units,
        the reprojection noise it assumed; what its observations say about the principal point, ``[2]``
        px and sigma ``[2]`` px, the axes ``bool [2]`` it moved the principal point on, and where to,
        ``[2]`` px; ``lens``, the window's lens record; ``misread``, ``WindowFocal.misread``); returns whether
        it is used. Ignored once the focal is fixed."""
        if not self.config.enabled or self.fixed or not np.isfinite(log_focal_px) or not np.isfinite(sigma):
            return False
        self._matches(size)
        W, H = size
        self.aspect, self.portrait = _aspect(size), H > W
        entry = WindowFocal(window, log_focal_px - float(np.log(max(W, H))),
                            max(sigma, self.config.min_window_sigma), noise_px2, portrait=H > W, lens=lens,
                            misread=misread)
        centre = np.array([(W - 1) / 2, (H - 1) / 2])
        if principal is not None:
            entry.principal_rel = (np.asarray(principal[0], np.float64) - centre) / max(W, H)
            entry.principal_sigma = np.asarray(principal[1], np.float64) / max(W, H)
            entry.principal_applied = np.zeros(2, bool)
            if principal_applied is not None and principal_used_px is not None:
                entry.principal_applied = np.asarray(principal_applied, bool).copy()
                used_rel = (np.asarray(principal_used_px, np.float64) - centre) / max(W, H)
                entry.principal_rel = np.where(entry.principal_applied, used_rel, entry.principal_rel)
        self.windows.append(entry)
        self._combine()
        self._combine_principal()
        cfg = self.config
        windows = [w for w in self.windows if not w.stated]
        if (self.log_rel is not None and sum(w.used for w in windows) >= cfg.min_windows
                and all(w.used for w in windows) and self.birge <= cfg.max_birge and self.sigma <= cfg.fix_sigma):
            self.fixed_at = window
        return self.windows[-1].used

    def _combine(self) -> None:
        cfg = self.config
        x = np.array([w.log_rel for w in self.windows])
        s = np.array([w.sigma for w in self.windows])
        informative = (s <= cfg.max_prior_sigma) & np.array([w.plausible(cfg) and not w.misread for w in self.windows])
        if not informative.any():  # windows that say next to nothing do not make an estimate
            for w in self.windows:
                w.used = False
            self.log_rel = self.sigma = None
            self.birge = 1.0
            return
        used = informative.copy()
        # Leave-one-out: the window that disagrees most with the others' combined estimate (in
        # units of both sigmas) is dropped while it disagrees by more than outlier_sigmas. Only with
        # three or more windows: of two that disagree, neither can be called the outlier.
        while used.sum() >= 3:
            idx = np.nonzero(used)[0]
            devs = []
            for i in idx:
                others = idx[idx != i]
                w_o = 1 / s[others] ** 2
                mean_o = (w_o * x[others]).sum() / w_o.sum()
                devs.append(abs(x[i] - mean_o) / np.sqrt(s[i] ** 2 + 1 / w_o.sum()))
            worst = int(np.argmax(devs))
            if devs[worst] <= cfg.outlier_sigmas:
                break
            used[idx[worst]] = False
        for w, u in zip(self.windows, used):
            w.used = bool(u)
        wts = 1 / s[used] ** 2
        self.log_rel = float((wts * x[used]).sum() / wts.sum())
        n = int(used.sum())
        chi2 = float((wts * (x[used] - self.log_rel) ** 2).sum())
        self.birge = float(np.sqrt(chi2 / (n - 1))) if n > 1 else 1.0
        self.sigma = float(1 / np.sqrt(wts.sum())) * max(self.birge, 1.0)

    def _combine_principal(self) -> None:
        """Inverse-variance mean, per axis, of the principal points of the used windows of the latest
        window's orientation that estimated one; an axis none estimated stays at the centre."""
        rel, sig = np.zeros(2), np.full(2, np.nan)
        for axis in (0, 1):
            est = [(w.principal_rel[axis], w.principal_sigma[axis]) for w in self.windows
                   if w.used and w.portrait == self.portrait and w.principal_applied is not None
                   and w.principal_applied[axis]]
            if est:
                x, s = np.array(est).T
                wts = 1 / np.maximum(s, 1e-6) ** 2
                rel[axis] = float((wts * x).sum() / wts.sum())
                sig[axis] = float(1 / np.sqrt(wts.sum()))
        self.principal_rel, self.principal_sigma = rel, sig

    def lens_k1(self) -> float:
        """The stream's radial coefficient (normalised, ``bundle.BundleProblem.radial_k1``): the
        inverse-variance mean of the lenses the used windows kept, when at least half of the used windows
        kept one; 0 (a pinhole) otherwise. A window solved with the stream's focal instead of its own
        (fixed, or held) is adjusted through it (``recon.default.sfm.WindowSfm``): the stream's focal was
        read through that lens, and a pinhole at that focal would bend the window's views."""
        told = [w for w in self.windows if w.used and not w.stated]
        lenses = [w.lens for w in told if w.lens and w.lens.get("kept") and w.lens.get("radial_sigma")]
        if not lenses or 2 * len(lenses) < len(told):
            return 0.0
        k1 = np.array([lens["radial_k1"] for lens in lenses], np.float64)
        weights = 1.0 / np.array([lens["radial_sigma"] for lens in lenses], np.float64) ** 2
        return float((weights * k1).sum() / weights.sum())

    def report(self, size: tuple[int, int] | None = None) -> dict | None:
        """For run.json: the estimate (relative to the longest side, and in px at ``size``), its sigma,
        when it was fixed, and each window's evidence."""
        if not self.windows:
            return None
        stated = self.stated
        told = [w for w in self.windows if w.used and not w.stated]
        out = {
            # what the estimate rests on: "windows", "stated" (only the input's own statement, EXIF)
            # or "stated+windows"; None when nothing is used
            "focal_source": "+".join(name for name, on in (("stated", stated is not None and stated.used),
                                                           ("windows", bool(told))) if on) or None,
            "focal_rel": None if self.log_rel is None else float(np.exp(self.log_rel)),
            "focal_sigma_rel": self.sigma,
            "birge_ratio": self.birge,
            "fixed": self.fixed,
            "fixed_at_window": self.fixed_at,
            "lens_k1": self.lens_k1(),  # the lens windows solved with the stream's focal adjust through
            "principal_point": "image centre" if np.isnan(self.principal_sigma).all() else "estimated",
            # offset of the principal point from the image centre, over the longest side (x, y)
            "principal_offset_rel": self.principal_rel.tolist(),
            "principal_sigma_rel": [None if np.isnan(v) else float(v) for v in self.principal_sigma],
            "windows": [{"window": w.window, "focal_rel": float(np.exp(w.log_rel)), "sigma_rel": w.sigma,
                         "used": w.used, "plausible": w.plausible(self.config), "misread": w.misread,
                         # what its observations say about the principal point (offset from the
                         # centre / longest side, sigma), and on which axes (x, y) it was moved there
                         "principal_offset_rel": None if w.principal_rel is None else w.principal_rel.tolist(),
                         "principal_sigma_rel": None if w.principal_sigma is None else w.principal_sigma.tolist(),
                         "principal_applied": None if w.principal_applied is None else w.principal_applied.tolist(),
                         "lens": w.lens}
                        for w in self.windows if not w.stated],
        }
        if stated is not None:  # the focal the input stated (EXIF), relative to the longest side
            out["stated_focal"] = {"focal_rel": float(np.exp(stated.log_rel)), "sigma_rel": stated.sigma,
                                   "used": stated.used}
        if self.log_rel is None and self.held_rel is not None:
            out["held_focal_rel"] = self.held_rel  # not estimated: the starting guess, kept
        if size is not None and self.log_rel is not None:
            out["focal_px"] = float(np.exp(self.log_rel)) * max(size)
            out["model_size"] = list(size)
        elif size is not None and self.held_rel is not None:
            out["held_focal_px"] = self.held_rel * max(size)
            out["model_size"] = list(size)
        return out
