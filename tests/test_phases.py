"""Phase boundaries on measure curves whose answer is known by construction (see phases.PHASE_RULE)."""

import numpy as np
import pandas as pd

from interp.analysis.phases import PHASE_RULE, find_phases, first_epoch_reaching


def grokking_table(grok=True, mem=True):
    e = np.arange(0, 20001, 100)
    train_acc = np.where(e >= 300, 1.0, 0.5) if mem else np.full(e.shape, 0.5)
    test_acc = np.where(e >= 14000, 1.0, 0.01) if grok else np.full(e.shape, 0.01)
    test_loss = np.where(e <= 1400, 4.7 + (34 - 4.7) * e / 1400, 30.0)
    if grok:
        test_loss = np.where(e > 12000, 1e-2, test_loss)
        test_loss = np.where(e >= 14000, 1e-7, test_loss)
    # restricted loss: chance until 9000, then 1e-3 (below the log-midpoint of 5 and 1e-6), then 1e-6
    restricted = np.where(e <= 9000, 5.0, 1e-3)
    restricted = np.where(e >= 15000, 1e-6, restricted)
    if not grok:
        restricted = np.full(e.shape, 5.0)
    return pd.DataFrame(
        dict(epoch=e, train_acc=train_acc, test_acc=test_acc, test_loss=test_loss, restricted_loss=restricted)
    )


def test_phases_of_a_grokking_run():
    ph = find_phases(grokking_table())
    assert (ph.t_mem, ph.t_grok) == (300, 14000)
    assert ph.memorisation == (0, 1400)  # test-loss peak
    assert ph.circuit_formation == (1400, 9100)  # restricted loss half-way down (log scale)
    assert ph.cleanup == (9100, 14000)  # test loss 95% of the way down (log scale)
    assert ph.boundaries == {"memorisation_end": 1400, "cleanup_start": 9100, "cleanup_end": 14000}
    d = ph.to_dict()
    assert d["rule"] == PHASE_RULE and d["cleanup"] == [9100, 14000]


def test_no_grokking_and_no_memorisation():
    ph = find_phases(grokking_table(grok=False))
    assert ph.t_grok is None and ph.cleanup is None
    assert ph.circuit_formation == (1400, 20000) and ph.notes
    ph = find_phases(grokking_table(grok=False, mem=False))
    assert ph.t_mem is None and ph.memorisation == (0, 20000) and ph.circuit_formation is None


def test_per_epoch_metrics_refine_t_mem_and_t_grok():
    table = grokking_table()
    e = np.arange(0, 20001)
    metrics = pd.DataFrame(
        dict(
            epoch=e,
            train_acc=np.where(e >= 257, 1.0, 0.2),
            test_acc=np.where(e >= 13950, 1.0, 0.01),
            test_loss=np.interp(e, table.epoch, table.test_loss),
        )
    )
    ph = find_phases(table, metrics)
    assert (ph.t_mem, ph.t_grok) == (257, 13950)
    assert first_epoch_reaching([0, 5, 9], [0.5, 0.99, 1.0]) == 5
    assert first_epoch_reaching([0, 5], [0.5, 0.9]) is None


def test_metrics_evaluated_every_tenth_epoch_give_t_grok_at_that_resolution():
    """eval_every = 10: test columns are empty between evaluations; T_grok is the first evaluated
    epoch >= 0.99, finer than the checkpoints (every 100), and T_mem keeps per-epoch resolution."""
    e = np.arange(0, 20001)
    test_acc = np.where(e >= 13_995, 1.0, 0.01).astype(float)
    test_loss = np.where(e <= 1400, 4.7 + (34 - 4.7) * e / 1400, 30.0)
    test_loss = np.where(e >= 13_995, 1e-7, test_loss)
    test_acc[e % 10 != 0] = np.nan
    test_loss[e % 10 != 0] = np.nan
    metrics = pd.DataFrame(
        dict(epoch=e, train_acc=np.where(e >= 257, 1.0, 0.5), test_acc=test_acc, test_loss=test_loss)
    )
    ph = find_phases(grokking_table(), metrics)
    assert (ph.t_mem, ph.t_grok) == (257, 14_000)
    assert ph.memorisation == (0, 1400)
