""" "Did you mean": the one suggestion function every message uses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.suggest import MAX_WORD, closest, did_you_mean

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.", min_size=1, max_size=20)


@given(words, st.lists(words, max_size=20))
def test_a_suggestion_is_always_one_of_the_choices(word: str, choices: list[str]) -> None:
    match = closest(word, choices)
    assert match is None or match in choices
    assert did_you_mean(word, choices) == ("" if match is None else f" (did you mean '{match}'?)")


@given(st.lists(words, min_size=1, max_size=20), st.data())
def test_a_word_that_is_a_choice_suggests_itself(choices: list[str], data: st.DataObject) -> None:
    word = data.draw(st.sampled_from(choices))
    assert closest(word, choices) == word


@given(st.lists(words, max_size=10))
def test_the_order_of_the_choices_does_not_matter(choices: list[str]) -> None:
    assert closest("comands", choices) == closest("comands", list(reversed(choices)))


def test_typical_typos_and_the_length_bound() -> None:
    assert did_you_mean("comands", ["commands", "name"]) == " (did you mean 'commands'?)"
    assert did_you_mean("zzz", ["commands", "name"]) == ""
    assert closest("x" * (MAX_WORD + 1), ["x" * (MAX_WORD + 1)]) is None
