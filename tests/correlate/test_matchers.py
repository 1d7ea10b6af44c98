"""Label matchers: Alertmanager's syntax, semantics, canonical form and pydantic forms."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from onduty.correlate import (
    Matcher,
    MatcherError,
    MatcherList,
    Matchers,
    MatchOp,
    format_labels,
    parse_matcher,
    parse_matchers,
    to_matchers,
)

OPS: list[MatchOp] = ["=", "!=", "=~", "!~"]

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('service="checkout"', Matcher("service", "=", "checkout")),
        ('severity!="info"', Matcher("severity", "!=", "info")),
        ('alertname=~"Instance.*"', Matcher("alertname", "=~", "Instance.*")),
        ('instance!~"canary-.*"', Matcher("instance", "!~", "canary-.*")),
        ("service=checkout", Matcher("service", "=", "checkout")),
        ("alertname=~Instance.*", Matcher("alertname", "=~", "Instance.*")),
        ('  service  =  "checkout"  ', Matcher("service", "=", "checkout")),
        ('team=""', Matcher("team", "=", "")),
        ('msg="say \\"hi\\""', Matcher("msg", "=", 'say "hi"')),
        ('path="C:\\\\temp"', Matcher("path", "=", "C:\\temp")),
        ('text="two\\nlines"', Matcher("text", "=", "two\nlines")),
        ('host=~"db\\.example\\.com"', Matcher("host", "=~", "db\\.example\\.com")),
        ('"service.name"="checkout"', Matcher("service.name", "=", "checkout")),
        ("job:rate=5", Matcher("job:rate", "=", "5")),
        ('v="{a=b, c!~d}"', Matcher("v", "=", "{a=b, c!~d}")),
        ('emoji="héllo ✓"', Matcher("emoji", "=", "héllo ✓")),
    ],
)
def test_parse_matcher(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{service="checkout", severity!="info"}',
        'service="checkout", severity!="info"',
        "service=checkout,severity!=info",
        '{service="checkout",severity!="info",}',
        '  { service = "checkout" ,severity!=info }  ',
        'service="checkout",severity!="info",',
    ],
)
def test_parse_matchers_braced_and_bare(text: str) -> None:
    assert parse_matchers(text) == Matchers(
        [Matcher("service", "=", "checkout"), Matcher("severity", "!=", "info")]
    )


@pytest.mark.parametrize("text", ["", "   ", "{}", " { } "])
def test_parse_matchers_empty(text: str) -> None:
    assert parse_matchers(text) == Matchers()


def test_parse_matchers_keeps_order_and_commas_inside_quotes() -> None:
    parsed = parse_matchers('{b="1,2", a=~"x|y"}')
    assert [m.name for m in parsed] == ["b", "a"]
    assert parsed[0].value == "1,2"


ERRORS = [
    # (function, text, position, reason)
    (parse_matcher, "service", 7, "expected an operator (=, !=, =~ or !~), found the end"),
    (parse_matcher, "service checkout", 8, "expected an operator (=, !=, =~ or !~), found 'c'"),
    (parse_matcher, "service=", 8, "expected a label value, found the end of the text"),
    (parse_matcher, '=checkout"', 0, "expected a label name, found '='"),
    (parse_matcher, "service==x", 8, "expected a label value (quote the value if it contains"),
    (parse_matcher, "a='b'", 2, 'expected a label value (quote with double quotes: "...")'),
    (parse_matcher, 'a="b', 2, "a label value opened with '\"' is never closed"),
    (parse_matcher, '"a=1', 0, "a label name opened with '\"' is never closed"),
    (parse_matcher, 'a="b\\"', 2, "never closed"),
    (parse_matcher, '""="x"', 0, "a label name cannot be empty"),
    (parse_matcher, 'a=~"("', 3, "invalid regular expression '('"),
    (parse_matcher, 'a=~"x)|(y"', 3, "invalid regular expression 'x)|(y'"),
    (parse_matcher, 'a=~"[[]"', 3, "ambiguous regular expression '[[]'"),
    (parse_matcher, 'a="1",b="2"', 5, "expected the end of the matcher (use parse_matchers"),
    (parse_matcher, 'a="1" b', 6, "expected the end of the matcher"),
    (parse_matcher, "", 0, "expected a label name, found the end of the text"),
    (parse_matchers, '{a="1"', 6, "expected ',' or '}', found the end of the text"),
    (parse_matchers, '{a="1" b="2"}', 7, "expected ',' or '}', found 'b'"),
    (parse_matchers, 'a="1" b="2"', 6, "expected ',' or the end of the text, found 'b'"),
    (parse_matchers, 'a="1"}', 5, "expected ',' or the end of the text, found '}'"),
    (parse_matchers, '{a="1"} x', 8, "expected the end of the text after '}', found 'x'"),
    (parse_matchers, "{", 1, "expected a matcher or '}', found the end of the text"),
    (parse_matchers, '{a="1",', 7, "expected a matcher or '}', found the end of the text"),
    (parse_matchers, 'a="1",,b="2"', 6, "expected a label name, found ','"),
    (parse_matchers, "a=b c", 4, "expected ',' or the end of the text, found 'c'"),
    (parse_matchers, "a=x{2}", 3, "expected ',' or the end of the text, found '{'"),
]


@pytest.mark.parametrize(("parse", "text", "position", "reason"), ERRORS)
def test_parse_errors_name_the_position_and_what_was_expected(
    parse: object, text: str, position: int, reason: str
) -> None:
    assert callable(parse)
    with pytest.raises(MatcherError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.position == position
    assert error.text == text
    assert reason in error.reason
    assert str(error).startswith(f"invalid matcher {text!r} at position {position}: ")


def test_error_message_in_full() -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matcher("service checkout")
    assert str(caught.value) == (
        "invalid matcher 'service checkout' at position 8: "
        "expected an operator (=, !=, =~ or !~), found 'c'"
    )


@pytest.mark.parametrize(
    ("name", "op", "value", "reason"),
    [
        ("", "=", "x", "a label name must be a non-empty string"),
        ("a", "==", "x", "unknown operator '=='"),
        ("a", "=~", "[", "invalid regular expression '['"),
    ],
)
def test_building_a_bad_matcher(name: str, op: str, value: str, reason: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(reason)):
        Matcher(name, op, value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- semantics


SEMANTICS = [
    # (matcher, labels, matches)
    ('team=""', {}, True),
    ('team=""', {"team": ""}, True),
    ('team=""', {"team": "ops"}, False),
    ('team="ops"', {}, False),
    ('team="ops"', {"team": "ops"}, True),
    ('team="ops"', {"team": "Ops"}, False),
    ('team!="ops"', {}, True),
    ('team!="ops"', {"team": "dev"}, True),
    ('team!="ops"', {"team": "ops"}, False),
    ('team!=""', {}, False),
    ('team!=""', {"team": "ops"}, True),
    ('alertname=~"Instance"', {"alertname": "InstanceDown"}, False),
    ('alertname=~"Down"', {"alertname": "InstanceDown"}, False),
    ('alertname=~"Instance.*"', {"alertname": "InstanceDown"}, True),
    ('alertname=~".*Down"', {"alertname": "InstanceDown"}, True),
    ('alertname=~"a|b"', {"alertname": "a"}, True),
    ('alertname=~"a|b"', {"alertname": "ab"}, False),
    ('alertname=~"a|ab"', {"alertname": "ab"}, True),
    ('alertname=~"x"', {"alertname": "x\n"}, False),
    ('alertname=~".*"', {}, True),
    ('alertname=~".+"', {}, False),
    ('alertname=~"(?i)instance.*"', {"alertname": "InstanceDown"}, True),
    ('alertname=~"(?i)(?s)a.b"', {"alertname": "A\nB"}, True),
    ('instance!~"canary-.*"', {"instance": "canary-1"}, False),
    ('instance!~"canary-.*"', {"instance": "web-canary-1"}, True),
    ('instance!~"canary"', {"instance": "canary-1"}, True),
    ('instance!~".+"', {}, True),
    ('instance!~".*"', {}, False),
    ('host=~"db\\.example"', {"host": "db.example"}, True),
    ('host=~"db\\.example"', {"host": "dbXexample"}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), SEMANTICS)
def test_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


def test_matchers_match_when_all_do_and_empty_matches_everything() -> None:
    matchers = parse_matchers('{service="checkout", severity!="info"}')
    assert matchers.matches({"service": "checkout", "severity": "page"})
    assert matchers.matches({"service": "checkout"})
    assert not matchers.matches({"service": "checkout", "severity": "info"})
    assert not matchers.matches({"service": "cart"})
    assert Matchers().matches({"anything": "at all"})


def test_is_regex_and_is_equal() -> None:
    flags = {op: (Matcher("a", op, "x").is_regex, Matcher("a", op, "x").is_equal) for op in OPS}
    assert flags == {
        "=": (False, True),
        "!=": (False, False),
        "=~": (True, True),
        "!~": (True, False),
    }


# --------------------------------------------------------------------------- canonical form


def test_canonical_form() -> None:
    matchers = parse_matchers(
        'service=checkout, "service.name"!=x, msg=~"say \\"hi\\"\\n", p="C:\\\\"'
    )
    assert str(matchers) == (
        '{service="checkout","service.name"!="x",msg=~"say \\"hi\\"\\n",p="C:\\\\"}'
    )
    assert str(matchers[0]) == 'service="checkout"'
    assert repr(matchers) == f"Matchers({str(matchers)!r})"
    assert str(Matchers()) == "{}"


def test_regex_backslashes_survive_the_round_trip() -> None:
    matcher = parse_matcher('host=~"db\\.example"')
    assert matcher.value == "db\\.example"
    assert str(matcher) == 'host=~"db\\\\.example"'
    assert parse_matcher(str(matcher)) == matcher


names = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
    st.text(min_size=1, max_size=8),
)
plain_values = st.text(max_size=12)
regex_values = st.one_of(
    st.text(max_size=8).map(re.escape),
    st.sampled_from(["Instance.*", "a|b", "(?i)x+", "[a-z]{2,3}", "\\d+", "", ".*\\.com"]),
)
matchers_strategy = st.one_of(
    st.builds(Matcher, names, st.sampled_from(["=", "!="]), plain_values),
    st.builds(Matcher, names, st.sampled_from(["=~", "!~"]), regex_values),
)


@given(matchers_strategy)
def test_round_trip_str_parse(matcher: Matcher) -> None:
    assert parse_matcher(str(matcher)) == matcher


@given(st.lists(matchers_strategy, max_size=5))
def test_round_trip_list(items: list[Matcher]) -> None:
    matchers = Matchers(items)
    assert parse_matchers(str(matchers)) == matchers
    assert to_matchers(matchers.to_strings()) == matchers
    assert to_matchers(matchers.to_api()) == matchers


@given(st.text(max_size=20))
def test_parsing_never_fails_with_anything_but_a_matcher_error(text: str) -> None:
    try:
        parsed = parse_matchers(text)
    except MatcherError as error:
        assert error.position is not None
        assert 0 <= error.position <= len(text)
    else:
        assert parse_matchers(str(parsed)) == parsed


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=4))
def test_format_labels_is_canonical(labels: dict[str, str]) -> None:
    text = format_labels(labels)
    reordered = dict(reversed(list(labels.items())))
    assert format_labels(reordered) == text
    assert format_labels({**labels, "zz_empty": ""}) == format_labels(
        {k: v for k, v in labels.items() if k != "zz_empty"}
    )
    # It reads back as equality matchers for exactly the non-empty labels.
    parsed = parse_matchers(text)
    assert {m.name: m.value for m in parsed} == {k: v for k, v in labels.items() if v}


# --------------------------------------------------------------------------- pydantic


class Holder(BaseModel):
    matchers: MatcherList


def test_validates_from_strings_and_serializes_to_strings() -> None:
    holder = Holder.model_validate({"matchers": ['service="checkout"', 'alertname=~"Instance.*"']})
    assert holder.matchers == Matchers(
        [Matcher("service", "=", "checkout"), Matcher("alertname", "=~", "Instance.*")]
    )
    assert isinstance(holder.matchers, Matchers)
    expected = ['service="checkout"', 'alertname=~"Instance.*"']
    assert holder.model_dump() == {"matchers": expected}
    assert holder.model_dump(mode="json") == {"matchers": expected}
    assert Holder.model_validate_json(holder.model_dump_json()) == holder


def test_validates_from_alertmanager_api_objects() -> None:
    holder = Holder.model_validate(
        {
            "matchers": [
                {"name": "service", "value": "checkout", "isRegex": False, "isEqual": True},
                {"name": "alertname", "value": "Instance.*", "isRegex": True},
                {"name": "severity", "value": "info", "isRegex": False, "isEqual": False},
                {"name": "instance", "value": "canary-.*", "isRegex": True, "isEqual": False},
            ]
        }
    )
    assert holder.model_dump()["matchers"] == [
        'service="checkout"',
        'alertname=~"Instance.*"',
        'severity!="info"',
        'instance!~"canary-.*"',
    ]
    assert holder.matchers[1].to_api() == {
        "name": "alertname",
        "value": "Instance.*",
        "isRegex": True,
        "isEqual": True,
    }


def test_validates_from_json_text_and_other_forms() -> None:
    from_json = Holder.model_validate_json(
        '{"matchers": ["a=\\"1\\"", {"name": "b", "value": "2", "isRegex": false}]}'
    )
    assert str(from_json.matchers) == '{a="1",b="2"}'
    assert Holder(matchers='{a="1", b="2"}').matchers == from_json.matchers
    matcher = Matcher("a", "=", "1")
    assert Holder(matchers=[matcher]).matchers == Matchers([matcher])
    assert Holder(matchers=Matchers([matcher])).matchers == Matchers([matcher])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (['a="1"', "b"], "matcher [1]: invalid matcher 'b' at position 1: expected an operator"),
        ([{"name": "a", "value": "1"}], "matcher [0]: a matcher object needs 'isRegex'"),
        (
            [{"name": "a", "value": "1", "isRegex": False, "regex": True}],
            "matcher [0]: unknown field 'regex' in a matcher object",
        ),
        (
            [{"name": "a", "value": "1", "isRegex": "no"}],
            "isRegex and isEqual must be true or false",
        ),
        ([{"name": "a", "value": 1, "isRegex": False}], "name and value must be strings"),
        ([{"name": "", "value": "1", "isRegex": False}], "a label name must be a non-empty"),
        ([{"name": "a", "value": "(", "isRegex": True}], "invalid regular expression '('"),
        ([3], "matcher [0]: expected a matcher string or object, found int"),
        ({"name": "a"}, "expected a list of matchers"),
        (7, "expected a list of matchers"),
        ("a=", "expected a label value"),
    ],
)
def test_validation_errors(value: object, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"matchers": value})
    assert reason in str(caught.value)


def test_json_schema_describes_both_item_forms() -> None:
    schema = Holder.model_json_schema()["properties"]["matchers"]
    assert schema["type"] == "array"
    kinds = [item["type"] for item in schema["items"]["anyOf"]]
    assert kinds == ["string", "object"]
    serialized = Holder.model_json_schema(mode="serialization")["properties"]["matchers"]
    assert serialized["items"] == {"type": "string"}
