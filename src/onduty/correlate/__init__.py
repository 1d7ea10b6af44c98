"""Alertmanager-grade correlation building blocks, pure like the rest of the core: label
matchers, silences and maintenance windows, inhibition rules, and flap detection."""

from onduty.correlate.flapping import FlapDetector
from onduty.correlate.inhibition import (
    Inhibition,
    Inhibitor,
    InhibitRule,
    label_key,
    scan_inhibition,
)
from onduty.correlate.matchers import (
    OPERATORS,
    Matcher,
    MatcherError,
    MatcherList,
    Matchers,
    MatchOp,
    format_labels,
    parse_matcher,
    parse_matchers,
    quote,
    to_matchers,
)
from onduty.correlate.silences import (
    DEFAULT_RETENTION,
    Silence,
    SilenceKind,
    Silences,
    SilenceState,
)

__all__ = [
    "DEFAULT_RETENTION",
    "OPERATORS",
    "FlapDetector",
    "InhibitRule",
    "Inhibition",
    "Inhibitor",
    "MatchOp",
    "Matcher",
    "MatcherError",
    "MatcherList",
    "Matchers",
    "Silence",
    "SilenceKind",
    "SilenceState",
    "Silences",
    "format_labels",
    "label_key",
    "parse_matcher",
    "parse_matchers",
    "quote",
    "scan_inhibition",
    "to_matchers",
]
