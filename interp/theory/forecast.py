"""Forecasting T_grok from what a run has shown so far (REFERENCE §5, §7).

Three forecasters, each calibrated on a sweep (``calibrate``) and applied to a run's metrics up to
"now" (``forecast``); all need the run to have memorised (T_mem = first epoch with train accuracy
>= 0.99), since the delay is what they predict:

- ``delay_law``: the norm-separation law in the calibrated form of the follow-up paper (REFERENCE
  §5, arXiv 2605.18845): T_grok - T_mem = ln(V_mem / V*) / (2 kappa eta lambda). Calibration: V* is
  the median V at the end of the calibration runs (the law's V_final; so it depends on how long
  the sweep trains past T_grok), kappa the median of ln(V_mem / V*) / (2 eta lambda (T_grok - T_mem)).
  Needs only T_mem, so it answers at T_mem. (V* as the median V at T_grok was tried: 40% leave-
  cells-out error on the 32-run small sweep, against 27% with V_final.)
- ``contraction``: how far V still has to fall, at the calibrated speed: the calibration runs reach
  T_grok when V = rho V_mem (rho their median V(T_grok) / V_mem), and V contracts as
  exp(c eta lambda t) (c the median of ln(V(T_grok) / V_mem) / (eta lambda (T_grok - T_mem))), so
  T_grok = now + ln(rho V_mem / V_now) / (c eta lambda). The run's own progress enters through V_now.
  (Extrapolating a free fit V_t = A exp(k (t - T_mem)) + C from the first quarter of the delay was
  tried and did worse, 59% error at T_mem + 25%: V first rises after T_mem, then contracts.)
- ``regression``: the delay-law paper's three-input predictor (eta, lambda, V_mem; REFERENCE §5) as a
  least-squares fit of ln(T_grok - T_mem) on ln eta, ln lambda and ln V_mem over the calibration
  runs: the law's form with its exponents free (the law says -1, -1 and a weak V_mem term). An input
  the calibration runs do not vary gets no coefficient (it cannot be told from the intercept).
- ``fourier``: the trend of the embedding's Fourier sparsity, ``gini_W_E`` (REFERENCE §3; the
  training probe of that name, or computed from checkpoints for runs without probes), extrapolated
  linearly over its last points to g*, the calibration runs' median Gini at T_grok. A flat or
  falling trend means "will not grok"; it needs 3 points past T_mem.

``combined`` is the median of the forecasters that answer. A run without weight decay is forecast
not to grok by the norm forecasters (nothing contracts V). Each T_grok has an interval from the
calibration runs' own spread: exp(+-1.96 sigma) around it, sigma the standard deviation of
log(predicted / true) over the calibration runs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from interp.analysis.phases import ACC_THRESHOLD, first_epoch_reaching
from interp.errors import InterpError

FORECASTERS = ("delay_law", "regression", "contraction", "fourier")
REGRESSORS = ("log_lr", "log_weight_decay", "log_V_mem")
TREND_POINTS = 5  # last Gini points the trend is fitted on
Z95 = 1.96


@dataclass
class Calibration:
    """What the forecasters learn from a sweep (see the module docstring)."""

    kappa: float
    v_star: float
    rho: float  # median V(T_grok) / V_mem
    rate_per_eta_lambda: float  # median contraction exponent k / (eta lambda) over [T_mem, T_grok]
    gini_at_grok: Optional[float]
    sigma: dict[str, float] = field(default_factory=dict)  # log-error spread per forecaster
    regression: dict[str, float] = field(default_factory=dict)  # intercept and REGRESSORS coefficients
    n_runs: int = 0
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise InterpError(f"{path}: not a forecast calibration ({e})") from None


@dataclass
class Forecast:
    """One forecaster's answer at epoch ``now``: will the run grok within ``budget`` and when."""

    forecaster: str
    now: int
    t_grok: Optional[float]  # None: no answer, or never (see will_grok)
    interval: Optional[tuple[float, float]]
    will_grok: Optional[bool]  # None: this forecaster cannot answer yet
    budget: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunHistory:
    """What a forecaster may look at: the run's logged history up to ``now`` and its hyperparameters."""

    epochs: np.ndarray
    V: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    gini_epochs: np.ndarray
    gini: np.ndarray
    lr: float
    weight_decay: float
    budget: int

    @property
    def now(self) -> int:
        return int(self.epochs[-1])

    @property
    def t_mem(self) -> Optional[int]:
        return first_epoch_reaching(self.epochs, self.train_acc, ACC_THRESHOLD)

    @property
    def t_grok(self) -> Optional[int]:
        return first_epoch_reaching(self.epochs, self.test_acc, ACC_THRESHOLD)

    def v_at(self, epoch: int) -> float:
        i = int(np.searchsorted(self.epochs, epoch))
        return float(self.V[min(i, len(self.V) - 1)])

    def until(self, epoch: int) -> "RunHistory":
        """The history as it stood at ``epoch``."""
        k = self.epochs <= epoch
        g = self.gini_epochs <= epoch
        return RunHistory(
            self.epochs[k],
            self.V[k],
            self.train_acc[k],
            self.test_acc[k],
            self.gini_epochs[g],
            self.gini[g],
            self.lr,
            self.weight_decay,
            self.budget,
        )


def history(metrics: pd.DataFrame, lr: float, weight_decay: float, budget: int, gini=None) -> RunHistory:
    """A RunHistory from a run's metrics (``gini``: (epochs, values) when the metrics have no ``gini_W_E``)."""
    if "sq_total" not in metrics or metrics["sq_total"].isna().all():
        raise InterpError("the run's metrics have no weight-norm data (sq_total): the forecasters need V")
    for col in ("train_acc", "test_acc"):
        if col not in metrics or metrics[col].isna().all():
            raise InterpError(f"the run's metrics have no {col} history: T_mem and T_grok are unknown")
    e = metrics["epoch"].to_numpy()
    if gini is None and "gini_W_E" in metrics:
        g = metrics[["epoch", "gini_W_E"]].dropna()
        gini = (g["epoch"].to_numpy(), g["gini_W_E"].to_numpy(dtype=float))
    ge, gv = gini if gini is not None else (np.array([], dtype=int), np.array([]))
    return RunHistory(
        e,
        metrics["sq_total"].to_numpy(dtype=float),
        metrics["train_acc"].to_numpy(dtype=float),
        metrics["test_acc"].to_numpy(dtype=float),
        np.asarray(ge),
        np.asarray(gv, dtype=float),
        float(lr),
        float(weight_decay),
        int(budget),
    )


def _interval(t: float, t_mem: int, sigma: Optional[float]) -> Optional[tuple[float, float]]:
    """exp(+-1.96 sigma) on the delay, so the interval never starts before T_mem."""
    if sigma is None or not math.isfinite(sigma):
        return None
    d = max(t - t_mem, 1.0)
    return (t_mem + d * math.exp(-Z95 * sigma), t_mem + d * math.exp(Z95 * sigma))


def _answer(name: str, h: RunHistory, t: Optional[float], cal: Optional[Calibration], note: str = "") -> Forecast:
    t_mem = h.t_mem
    if t is None:  # forecast never to grok
        return Forecast(name, h.now, None, None, False, h.budget, note)
    t = max(float(t), float(h.now))  # it has not happened yet: no earlier than now
    iv = _interval(t, t_mem, (cal.sigma.get(name) if cal else None))
    return Forecast(name, h.now, t, iv, t <= h.budget, h.budget, note)


def forecast_delay_law(h: RunHistory, cal: Calibration) -> Forecast:
    t_mem = h.t_mem
    if h.weight_decay <= 0:
        return _answer("delay_law", h, None, cal, "no weight decay: V does not contract")
    v_mem = h.v_at(t_mem)
    delay = max(math.log(v_mem / cal.v_star), 0.0) / (2 * cal.kappa * h.lr * h.weight_decay)
    return _answer("delay_law", h, t_mem + delay, cal)


def _regressors(lr: float, weight_decay: float, v_mem: float) -> dict[str, float]:
    return {"log_lr": math.log(lr), "log_weight_decay": math.log(weight_decay), "log_V_mem": math.log(v_mem)}


def forecast_regression(h: RunHistory, cal: Calibration) -> Forecast:
    t_mem = h.t_mem
    if h.weight_decay <= 0:
        return _answer("regression", h, None, cal, "no weight decay: outside the fitted law")
    if not cal.regression:
        return Forecast("regression", h.now, None, None, None, h.budget, "calibration has no regression")
    x = _regressors(h.lr, h.weight_decay, h.v_at(t_mem))
    log_delay = cal.regression["intercept"] + sum(cal.regression.get(k, 0.0) * v for k, v in x.items())
    return _answer("regression", h, t_mem + math.exp(log_delay), cal)


def fit_regression(runs: list[RunHistory]) -> dict[str, float]:
    """Least squares of ln(delay) on the REGRESSORS that vary among ``runs`` (others get no coefficient)."""
    X = np.array([list(_regressors(h.lr, h.weight_decay, h.v_at(h.t_mem)).values()) for h in runs])
    y = np.log([h.t_grok - h.t_mem for h in runs])
    varied = [j for j in range(X.shape[1]) if np.ptp(X[:, j]) > 1e-12]
    A = np.column_stack([np.ones(len(runs))] + [X[:, j] for j in varied])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    out = {"intercept": float(coef[0])}
    out.update({REGRESSORS[j]: float(c) for j, c in zip(varied, coef[1:])})
    return out


def forecast_contraction(h: RunHistory, cal: Calibration) -> Forecast:
    t_mem = h.t_mem
    if h.weight_decay <= 0:
        return _answer("contraction", h, None, cal, "no weight decay: V does not contract")
    k = cal.rate_per_eta_lambda * h.lr * h.weight_decay
    if k >= 0:
        return _answer("contraction", h, None, cal, "calibrated rate is not a contraction")
    target = cal.rho * h.v_at(t_mem)
    v_now = float(h.V[-1])
    return _answer(
        "contraction", h, h.now + max(math.log(target / v_now) / k, 0.0), cal, f"V {v_now:.4g} -> {target:.4g}"
    )


def forecast_fourier(h: RunHistory, cal: Calibration) -> Forecast:
    t_mem = h.t_mem
    if cal.gini_at_grok is None:
        return Forecast("fourier", h.now, None, None, None, h.budget, "calibration has no Gini data")
    keep = h.gini_epochs >= t_mem
    e, g = h.gini_epochs[keep][-TREND_POINTS:], h.gini[keep][-TREND_POINTS:]
    if len(e) < 3:
        return Forecast("fourier", h.now, None, None, None, h.budget, "fewer than 3 Gini points past T_mem")
    if g[-1] >= cal.gini_at_grok:
        return _answer("fourier", h, h.now, cal, "Gini already at its grokking level")
    slope = np.polyfit(e.astype(float), g, 1)[0]
    if slope <= 0:
        return _answer("fourier", h, None, cal, "Gini is not rising")
    return _answer("fourier", h, e[-1] + (cal.gini_at_grok - g[-1]) / slope, cal)


def forecast(h: RunHistory, cal: Calibration) -> list[Forecast]:
    """Every forecaster's answer, then ``combined`` (the median of those that answer)."""
    if h.t_mem is None:
        raise InterpError(
            f"the run has not memorised yet at epoch {h.now} (train accuracy at most "
            f"{np.nanmax(h.train_acc):.3f} < {ACC_THRESHOLD}): the forecasters start at T_mem"
        )
    out = [
        forecast_delay_law(h, cal),
        forecast_regression(h, cal),
        forecast_contraction(h, cal),
        forecast_fourier(h, cal),
    ]
    answered = [f for f in out if f.will_grok is not None]
    if answered:
        ts = [f.t_grok if f.t_grok is not None else math.inf for f in answered]
        t = float(np.median(ts))
        if math.isinf(t):
            out.append(Forecast("combined", h.now, None, None, False, h.budget, "median of the forecasters: never"))
        else:
            out.append(_answer("combined", h, t, cal, f"median of {len(answered)} forecasters"))
    return out


# --- calibration and evaluation over sweeps ------------------------------------------------------


def _grokked(h: RunHistory) -> bool:
    return h.t_mem is not None and h.t_grok is not None and h.weight_decay > 0 and h.t_grok > h.t_mem


def calibrate(histories: list[RunHistory], source: str = "") -> Calibration:
    """Fit the forecasters' constants on runs that memorised and grokked (REFERENCE §5's follow-up form)."""
    runs = [h for h in histories if _grokked(h)]
    if len(runs) < 2:
        raise InterpError(
            f"{source or 'calibration'}: needs at least 2 runs that memorised and then grokked with weight decay, "
            f"found {len(runs)}"
        )
    v_mem = np.array([h.v_at(h.t_mem) for h in runs])
    v_grok = np.array([h.v_at(h.t_grok) for h in runs])
    v_final = np.array([h.V[-1] for h in runs])
    delay = np.array([h.t_grok - h.t_mem for h in runs], dtype=float)
    el = np.array([h.lr * h.weight_decay for h in runs])
    v_star = float(np.median(v_final))
    kappa = float(np.median(np.log(v_mem / v_star) / (2 * el * delay)))
    rho = float(np.median(v_grok / v_mem))
    rate = float(np.median(np.log(v_grok / v_mem) / (delay * el)))
    if not (kappa > 0 and rate < 0):
        raise InterpError(f"{source or 'calibration'}: V does not fall between T_mem and T_grok in these runs")
    ginis = [h.gini[np.searchsorted(h.gini_epochs, h.t_grok)] for h in runs if (h.gini_epochs >= h.t_grok).any()]
    cal = Calibration(kappa, v_star, rho, rate, float(np.median(ginis)) if ginis else None, {}, {}, len(runs), source)
    cal.regression = fit_regression(runs)
    # each forecaster's in-sample spread of log(predicted / true), at T_mem and at T_mem + 25% of the delay
    errs: dict[str, list[float]] = {}
    for h in runs:
        for at in (h.t_mem, h.t_mem + 0.25 * (h.t_grok - h.t_mem)):
            for f in forecast(h.until(int(at)), cal):
                if f.t_grok is not None:
                    errs.setdefault(f.forecaster, []).append(
                        math.log(max(f.t_grok - h.t_mem, 1.0) / (h.t_grok - h.t_mem))
                    )
    cal.sigma = {k: float(np.std(v)) for k, v in errs.items() if len(v) >= 2}
    return cal


def evaluate_leave_cells_out(
    histories: list[RunHistory], cells: list, checkpoints: tuple[float, ...] = (0.0, 0.25)
) -> pd.DataFrame:
    """Leave-cells-out evaluation: for each cell (hyperparameters other than the seed), calibrate on the
    other cells and forecast its runs at T_mem + f * (true delay) for f in ``checkpoints`` (runs that never
    grok: at T_mem only). One row per (run, point, forecaster): predicted and true T_grok, abs. % error,
    and whether the will-it-grok call was right (true: grokked within the run's budget)."""
    rows = []
    for cell in sorted(set(cells), key=repr):
        train = [h for h, c in zip(histories, cells) if c != cell]
        try:
            cal = calibrate(train, source=f"all but cell {cell}")
        except InterpError:
            continue
        for i, (h, c) in enumerate(zip(histories, cells)):
            if c != cell or h.t_mem is None:
                continue
            grokked = h.t_grok is not None and h.t_grok <= h.budget
            for frac in checkpoints if grokked else (0.0,):
                at = h.t_mem + (frac * (h.t_grok - h.t_mem) if grokked else 0.0)
                if grokked and at >= h.t_grok and frac > 0:
                    continue
                for f in forecast(h.until(int(at)), cal):
                    if f.will_grok is None:
                        continue
                    err = (
                        abs(f.t_grok - h.t_grok) / h.t_grok * 100
                        if grokked and f.t_grok is not None
                        else (100.0 if grokked else math.nan)
                    )
                    rows.append(
                        dict(
                            run=i,
                            cell=repr(cell),
                            at=frac,
                            forecaster=f.forecaster,
                            predicted=f.t_grok,
                            true=h.t_grok if grokked else None,
                            ape=err,
                            will_grok=f.will_grok,
                            grokked=grokked,
                            call_right=f.will_grok == grokked,
                        )
                    )
    return pd.DataFrame(rows)


def summarise_evaluation(ev: pd.DataFrame) -> pd.DataFrame:
    """Per forecaster and point: MAPE of T_grok over grokked runs, and will-it-grok accuracy over all."""
    out = []
    for (name, at), g in ev.groupby(["forecaster", "at"]):
        gk = g[g["grokked"]]
        out.append(
            dict(
                forecaster=name,
                at=at,
                mape=float(gk["ape"].mean()) if len(gk) else math.nan,
                n_grokked=int(len(gk)),
                call_accuracy=float(g["call_right"].mean()) if at == 0.0 else math.nan,
                n_calls=int(len(g)) if at == 0.0 else 0,
            )
        )
    return pd.DataFrame(out)


def run_history(run, gini_from_checkpoints: bool = True, metrics: Optional[pd.DataFrame] = None) -> RunHistory:
    """A run directory's history (``interp.store.Run``); Gini from checkpoints when there is no probe column."""
    m = run.metrics() if metrics is None else metrics
    cfg = run.config
    gini = None
    if "gini_W_E" not in m and gini_from_checkpoints:
        gini = checkpoint_ginis(run)
    return history(m, cfg.lr, cfg.weight_decay, cfg.epochs, gini)


def checkpoint_ginis(run) -> tuple[np.ndarray, np.ndarray]:
    """gini_W_E at every checkpoint (the probe's definition), for runs trained without probes."""
    import torch

    from interp.training.probes import fourier_ginis

    epochs = run.checkpoint_epochs()
    if not epochs:
        return np.array([], dtype=int), np.array([])
    states = [run.load_state_dict(e) for e in epochs]
    P = {n: torch.stack([s[n] for s in states]) for n in ("embed.W_E", "blocks.0.mlp.W_out", "unembed.W_U")}
    cfg = run.config
    return np.array(epochs), fourier_ginis(P, cfg.task, cfg.p)[:, 0].numpy()


def sweep_histories(sweep_dir: str | os.PathLike, progress: Optional[Callable] = None):
    """(histories, cells, run names) of a sweep's runs; cells are the swept values other than the seed."""
    from interp.store import SWEEP_RUNS_DIR, Run
    from interp.training.sweep import open_sweep, read_index

    spec, _ = open_sweep(sweep_dir)
    index = read_index(sweep_dir)
    axes = [a for a in spec.axes if a not in ("seed", "data_seed")]
    hs, cells, names = [], [], []
    for _, r in index.iterrows():
        run = Run.open(Path(sweep_dir) / SWEEP_RUNS_DIR / r["run"])
        try:
            hs.append(run_history(run))
        except InterpError:
            continue
        cells.append(tuple(r[a] for a in axes))
        names.append(r["run"])
        if progress:
            progress()
    return hs, cells, names


# --- one run, as `interp forecast` and the progress bars ask ---------------------------------------


@dataclass
class RunForecast:
    """A run's forecast at epoch ``now``. ``status``: not_memorised, forecast (still training or stopped
    before grokking), grokked (nothing left to forecast; ``forecasts`` then say what they said at T_mem)."""

    run: str
    status: str
    now: int
    budget: int
    t_mem: Optional[int]
    t_grok: Optional[int]
    forecasts: list[Forecast]
    calibration: Calibration
    message: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["forecasts"] = [f.to_dict() for f in self.forecasts]
        return d


def load_calibration(source: str | os.PathLike, exclude: Optional[str | os.PathLike] = None) -> Calibration:
    """A calibration from a saved JSON file or fitted on a sweep directory (leaving out the run ``exclude``)."""
    from interp.training.sweep import is_sweep

    src = Path(source)
    if is_sweep(src):
        hs, _, names = sweep_histories(src)
        if exclude is not None:
            keep = [n != Path(exclude).name or Path(exclude).resolve().parent.parent != src.resolve() for n in names]
            hs = [h for h, k in zip(hs, keep) if k]
        return calibrate(hs, source=str(src))
    if src.is_file():
        return Calibration.load(src)
    raise InterpError(f"{src}: neither a sweep directory nor a calibration file")


def forecast_run(
    run_dir: str | os.PathLike, cal: Calibration, at: Optional[int] = None, gini_from_checkpoints: bool = True
) -> RunForecast:
    """What the forecasters say about the run in ``run_dir`` from its history up to ``at`` (default: now)."""
    from interp.store import Run

    run = Run.open(run_dir)
    h = run_history(run, gini_from_checkpoints)
    if at is not None:
        if at < int(h.epochs[0]):
            raise InterpError(f"--at {at}: the run's history starts at epoch {int(h.epochs[0])}")
        h = h.until(at)
    name = str(run_dir)
    t_mem, t_grok = h.t_mem, h.t_grok
    if t_mem is None:
        msg = (
            f"not memorised yet at epoch {h.now} (train accuracy at most {np.nanmax(h.train_acc):.3f} < "
            f"{ACC_THRESHOLD}): the forecasters start at T_mem"
        )
        return RunForecast(name, "not_memorised", h.now, h.budget, None, None, [], cal, msg)
    if t_grok is not None:
        said = forecast(h.until(t_mem), cal)
        msg = f"grokked at epoch {t_grok} (T_mem {t_mem}): nothing left to forecast; below, what was forecast at T_mem"
        return RunForecast(name, "grokked", h.now, h.budget, t_mem, t_grok, said, cal, msg)
    out = forecast(h, cal)
    done = h.now >= h.budget
    msg = (
        f"finished its budget of {h.budget} epochs without grokking; below, the forecast if it were trained on"
        if done
        else f"epoch {h.now} of {h.budget}, memorised at {t_mem}"
    )
    return RunForecast(name, "forecast", h.now, h.budget, t_mem, None, out, cal, msg)


def format_run_forecast(rf: RunForecast) -> str:
    lines = [f"run       {rf.run}", f"status    {rf.message}"]
    for f in rf.forecasts:
        if f.will_grok is None:
            what = f"no answer ({f.note})"
        elif f.t_grok is None:
            what = f"will not grok ({f.note})" if f.note else "will not grok"
        else:
            iv = f", 95% interval {f.interval[0]:,.0f}..{f.interval[1]:,.0f}" if f.interval else ""
            within = "within" if f.will_grok else "after"
            what = f"T_grok ~ {f.t_grok:,.0f}{iv}: {within} the budget of {f.budget:,}"
        lines.append(f"{f.forecaster:<10}{what}")
    c = rf.calibration
    lines.append(
        f"calibration  {c.source or 'file'} ({c.n_runs} runs): kappa {c.kappa:.3g}, V* {c.v_star:.4g}, "
        f"rho {c.rho:.3g}, c {c.rate_per_eta_lambda:.3g}"
        + (f", Gini at T_grok {c.gini_at_grok:.3f}" if c.gini_at_grok is not None else "")
    )
    return "\n".join(lines)


class LiveForecaster:
    """Forecasts while runs train (the progress bars of ``interp train`` and ``interp sweep``).

    ``update(run_dir, row)`` takes each metrics row as the trainer reports it; from the first row with
    train accuracy >= 0.99 on, every ``every`` epochs it re-reads the run's metrics (the row is on disk
    before it is reported) and returns the ``combined`` forecast, else the last one (None before T_mem).
    Gini comes from the run's probe columns only (no checkpoint loading while training).
    """

    def __init__(self, cal: Calibration, every: int = 100):
        self.cal = cal
        self.every = every
        self.memorised: set[str] = set()
        self.last: dict[str, Forecast] = {}

    def update(self, run_dir: str | os.PathLike, row) -> Optional[Forecast]:
        key = str(run_dir)
        if row is None:
            return self.last.get(key)
        epoch, train_acc, test_acc = int(row[0]), row[3], row[4]
        if test_acc >= ACC_THRESHOLD:  # grokked: nothing left to forecast
            self.last.pop(key, None)
            return None
        if key not in self.memorised:
            if not train_acc >= ACC_THRESHOLD:
                return None
            self.memorised.add(key)
        elif epoch % self.every:
            return self.last.get(key)
        try:
            rf = forecast_run(run_dir, self.cal, gini_from_checkpoints=False)
        except InterpError:
            return self.last.get(key)
        combined = [f for f in rf.forecasts if f.forecaster == "combined"]
        if rf.status == "forecast" and combined:
            self.last[key] = combined[0]
        return self.last.get(key)
