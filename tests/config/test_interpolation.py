"""`${VAR}` and `${VAR:-default}` in TOML string values; `$${` is a literal `${`."""

from __future__ import annotations

import pytest
from config_samples import Writer
from hypothesis import given
from hypothesis import strategies as st

from mpp_proxy.config import ConfigError, load_config
from mpp_proxy.config.interpolation import substitute, substitute_all


def test_variable_is_replaced_inside_a_longer_string() -> None:
    assert substitute("https://${HOST}:${PORT}/v1", {"HOST": "h", "PORT": "1"}) == "https://h:1/v1"


def test_default_is_used_when_the_variable_is_unset_or_empty() -> None:
    assert substitute("${X:-fallback}", {}) == "fallback"
    assert substitute("${X:-fallback}", {"X": ""}) == "fallback"
    assert substitute("${X:-fallback}", {"X": "set"}) == "set"
    assert substitute("${X:-}", {}) == ""


def test_set_but_empty_variable_without_default_is_empty() -> None:
    assert substitute("a${X}b", {"X": ""}) == "ab"


def test_missing_variable_names_it() -> None:
    with pytest.raises(ConfigError, match="environment variable MISSING_ONE is not set"):
        substitute("${MISSING_ONE}", {})


def test_double_dollar_brace_is_a_literal() -> None:
    assert substitute("$${HOME} and ${A}", {"A": "x"}) == "${HOME} and x"


def test_lone_dollar_signs_are_literal() -> None:
    assert substitute("pa$$word$", {}) == "pa$$word$"


def test_substituted_values_are_not_substituted_again() -> None:
    assert substitute("${A}", {"A": "${B}"}) == "${B}"


def test_keys_are_never_substituted_only_values() -> None:
    document = {"services": {"${X}": {"title": "${X}"}}}
    assert substitute_all(document, {"X": "v"}) == {"services": {"${X}": {"title": "v"}}}


def test_values_inside_lists_and_inline_tables_are_substituted(write: Writer) -> None:
    config = load_config(
        write(
            """
            [proxy]
            categories = ["${CAT}", "b"]
            [services.api]
            base_url = "http://127.0.0.1:9"
            auth = { bearer = "${TOKEN}" }
            routes = { "GET /x" = "free" }
            """
        ),
        {"CAT": "ai", "TOKEN": "t"},
    )
    assert config.proxy.categories == ("ai", "b")
    auth = config.services[0].auth
    assert auth is not None and auth.token.value == "t"


def test_missing_variable_in_a_list_names_the_key(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write('[proxy]\ncategories = ["${NOPE}"]\n'), {})
    assert info.value.key == "proxy.categories.0"
    assert "NOPE" in info.value.problem


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.tuples(_names, _values), max_size=5), st.text(alphabet="ab-/ ", max_size=8))
def test_any_values_substitute_verbatim(pairs: list[tuple[str, str]], glue: str) -> None:
    environ = dict(pairs)
    template = glue.join("${" + name + "}" for name in environ)
    expected = glue.join(environ.values())
    assert substitute(template, environ) == expected


@given(st.text(alphabet="${}:-ab", max_size=30))
def test_any_text_substitutes_or_raises_config_error(text: str) -> None:
    try:
        result = substitute(text, {"a": "A", "b": ""})
    except ConfigError as exc:
        assert "${" in text and exc.problem
        return
    assert "${a}" not in result.replace("${a}", "", text.count("$${a}"))


def test_all_unset_variables_are_named_in_one_error(write: Writer) -> None:
    text = '[proxy]\ntitle = "${FIRST}"\ndescription = "${SECOND} ${FIRST} ${THIRD:-ok}"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(text), {})
    assert info.value.problem == "environment variable FIRST is not set (also unset: SECOND)"
    assert (info.value.key, info.value.line) == ("proxy.title", 2)
