import pytest
import torch

from interp.errors import InterpError
from interp.tasks import all_pairs, is_prime, labels, make_split, validate_task


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


@pytest.mark.parametrize(
    "task,op",
    [("add", lambda a, b, p: (a + b) % p), ("sub", lambda a, b, p: (a - b) % p), ("mul", lambda a, b, p: (a * b) % p)],
)
def test_labels_match_definition(task, op):
    p = 7
    toks = all_pairs(p)
    y = labels(task, p)
    for i in (0, 5, 17, 48):
        a, b = int(toks[i, 0]), int(toks[i, 1])
        assert int(y[i]) == op(a, b, p)
    assert toks[:, 2].eq(p).all()


def test_division_inverts_multiplication():
    p = 11
    y = labels("div", p)
    toks = all_pairs(p)
    ok = toks[:, 1] != 0
    assert torch.equal((y[ok] * toks[ok, 1]) % p, toks[ok, 0])


def test_split_is_seeded_disjoint_and_complete():
    s1, s2, s3 = make_split(113, 0.3, 0), make_split(113, 0.3, 0), make_split(113, 0.3, 1)
    assert len(s1.train) == 3830 and len(s1.test) == 113 * 113 - 3830
    assert torch.equal(s1.train, s2.train) and not torch.equal(s1.train, s3.train)
    assert torch.equal(torch.cat([s1.train, s1.test]).sort().values, torch.arange(113 * 113))


@pytest.mark.parametrize(
    "task,p,msg", [("add", 1, "p must be"), ("mul", 12, "prime"), ("div", 9, "prime"), ("pow", 7, "unknown task")]
)
def test_bad_tasks(task, p, msg):
    with pytest.raises(InterpError, match=msg):
        validate_task(task, p)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(frac):
    with pytest.raises(InterpError, match="frac_train"):
        make_split(7, frac, 0)
