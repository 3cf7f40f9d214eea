"""The three-way merge rules of ARCHITECTURE.md, as a table of cases."""

from __future__ import annotations

import pytest

from dynamics_sync.conflict import DYNAMICS, MARKETO, initial_values, merge

FIELDS = ["email", "title", "phone"]
SNAP = {"email": "a@x.com", "title": "Engineer", "phone": "111"}

# (case, authority, two_way, dynamics_current, marketo_current, to_marketo, to_dynamics, refresh, collided)
CASES = [
    ("nothing changed on either side (an echo)", MARKETO, True, dict(SNAP), dict(SNAP), {}, {}, {}, []),
    ("neither side reported the record", MARKETO, True, None, None, {}, {}, {}, []),
    ("Dynamics changed one field", MARKETO, True, {**SNAP, "title": "CTO"}, None, {"title": "CTO"}, {}, {}, []),
    ("Marketo changed one field", DYNAMICS, True, None, {**SNAP, "phone": "222"}, {}, {"phone": "222"}, {}, []),
    ("each side changed a different field", MARKETO, True, {**SNAP, "title": "CTO"}, {**SNAP, "phone": "222"},
     {"title": "CTO"}, {"phone": "222"}, {}, []),
    ("both changed the same field to the same value", MARKETO, True, {**SNAP, "title": "CTO"},
     {**SNAP, "title": "CTO"}, {}, {}, {"title": "CTO"}, []),
    ("lead collision: Marketo wins", MARKETO, True, {**SNAP, "title": "D"}, {**SNAP, "title": "M"},
     {}, {"title": "M"}, {}, ["title"]),
    ("contact collision: Dynamics wins", DYNAMICS, True, {**SNAP, "title": "D"}, {**SNAP, "title": "M"},
     {"title": "D"}, {}, {}, ["title"]),
    ("a field cleared in Marketo flows as null", DYNAMICS, True, None, {**SNAP, "phone": ""}, {}, {"phone": None},
     {}, []),
    ("empty string and null are the same value", MARKETO, True, {**SNAP, "phone": None},
     {**SNAP, "phone": ""}, {}, {}, {"phone": None}, []),
    ("surrounding spaces are not a change", MARKETO, True, {**SNAP, "title": " Engineer "}, None, {}, {}, {}, []),
    ("one-way entity: Marketo edits never flow back", MARKETO, False, None, {**SNAP, "title": "M"}, {}, {}, {}, []),
    ("one-way entity: Dynamics wins a collision whatever the authority", MARKETO, False,
     {**SNAP, "title": "D"}, {**SNAP, "title": "M"}, {"title": "D"}, {}, {}, []),
]


@pytest.mark.parametrize(
    ("authority", "two_way", "dyn", "mkto", "to_marketo", "to_dynamics", "refresh", "collided"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_merge_rules(authority, two_way, dyn, mkto, to_marketo, to_dynamics, refresh, collided):
    result = merge(
        FIELDS, authority=authority, two_way=two_way, dynamics_current=dyn, marketo_current=mkto,
        dynamics_snapshot=SNAP, marketo_snapshot=SNAP,
    )
    assert result.to_marketo == to_marketo
    assert result.to_dynamics == to_dynamics
    assert result.refresh == refresh
    assert [c.field for c in result.collisions] == collided


def test_collision_records_both_values_and_the_winner():
    result = merge(FIELDS, authority=MARKETO, two_way=True, dynamics_current={**SNAP, "title": "D"},
                   marketo_current={**SNAP, "title": "M"}, dynamics_snapshot=SNAP, marketo_snapshot=SNAP)
    [collision] = result.collisions
    assert (collision.marketo_value, collision.dynamics_value, collision.winner) == ("M", "D", MARKETO)
    assert collision.previous_value == "Engineer"


def test_each_side_is_compared_with_its_own_snapshot():
    """Marketo holds a value Dynamics never had: a Dynamics edit elsewhere must not blank it."""
    result = merge(FIELDS, authority=DYNAMICS, two_way=True, dynamics_current={"email": "a@x.com", "title": "CTO",
                   "phone": None}, marketo_current=None,
                   dynamics_snapshot={"email": "a@x.com", "title": "Engineer", "phone": None},
                   marketo_snapshot={"email": "a@x.com", "title": "Engineer", "phone": "111"})
    assert result.to_marketo == {"title": "CTO"}


def test_unknown_authority_is_refused():
    with pytest.raises(ValueError, match="authority"):
        merge(FIELDS, authority="both", two_way=True, dynamics_current=None, marketo_current=None,
              dynamics_snapshot={}, marketo_snapshot={})


@pytest.mark.parametrize(
    ("dynamics", "marketo", "writes", "after"),
    [
        ({"email": "a@x.com", "title": "CTO", "phone": None}, None,
         {"email": "a@x.com", "title": "CTO"}, {"email": "a@x.com", "title": "CTO", "phone": None}),
        ({"email": "a@x.com", "title": "CTO", "phone": None}, {"email": "a@x.com", "title": "Dev", "phone": "9"},
         {"title": "CTO"}, {"email": "a@x.com", "title": "CTO", "phone": "9"}),
    ],
    ids=["new person gets every Dynamics value", "existing person: Dynamics wins, its nulls blank nothing"],
)
def test_initial_copy(dynamics, marketo, writes, after):
    assert initial_values(FIELDS, dynamics, marketo) == (writes, after)


def test_a_field_may_name_its_own_authority():
    result = merge(FIELDS, authority=MARKETO, field_authority={"phone": DYNAMICS}, two_way=True,
                   dynamics_current={**SNAP, "title": "D", "phone": "D"}, marketo_current={**SNAP, "title": "M",
                   "phone": "M"}, dynamics_snapshot=SNAP, marketo_snapshot=SNAP)
    assert result.to_dynamics == {"title": "M"} and result.to_marketo == {"phone": "D"}
    assert {c.field: c.winner for c in result.collisions} == {"title": MARKETO, "phone": DYNAMICS}
