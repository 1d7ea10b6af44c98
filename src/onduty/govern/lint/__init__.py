"""Static checks of a policy's guardrails, before it ever governs an action.

`check_policy(config, now=...)` returns every problem it finds, each naming its rule:

- errors: a condition that does not compile (with the position the compiler reports), a
  variable or field the manager never provides (`servce`, `service.nme`), a comparison of
  values of different types (`service.tier > 3`, `service.tier == 3`), a call that fails on
  the values it would see, a condition that is not a boolean;
- warnings: a rule that can never fire (a condition false in every representative context
  whose literals no configuration can produce; a rate or blast limit on an action no runbook
  takes), a freeze whose ranges are all in the past, a fraction that rounds down to nothing, an
  outage brake that one alerting service already trips, duplicated or contradicting rules.

Conditions are checked against representative contexts built from the configuration: every
service, a sample signal (alertname, instance, service), each runbook's steps. The variables
have exactly the shape the manager gives them (`condition_variables`). Positions are 1-based
character offsets into the condition (the column, for a one-line condition).

Pure: no clock (the current time is a parameter), no I/O.
"""

from onduty.govern.lint.conditions import BUILTIN_FUNCTIONS, compile_problem, offset_of
from onduty.govern.lint.documents import check_document, problems_of_config_error
from onduty.govern.lint.problem import Problem, Severity
from onduty.govern.lint.rules import check_policy
from onduty.govern.lint.samples import SAMPLE_NOW, Sample, label_literals, representative_contexts
from onduty.govern.lint.tokens import Analysis, Chain, Comparison, Token, analyse, tokenize
from onduty.govern.variables import FIELDS, KNOWN_VARIABLES, condition_variables

__all__ = [
    "BUILTIN_FUNCTIONS",
    "FIELDS",
    "KNOWN_VARIABLES",
    "SAMPLE_NOW",
    "Analysis",
    "Chain",
    "Comparison",
    "Problem",
    "Sample",
    "Severity",
    "Token",
    "analyse",
    "check_document",
    "check_policy",
    "compile_problem",
    "condition_variables",
    "label_literals",
    "offset_of",
    "problems_of_config_error",
    "representative_contexts",
    "tokenize",
]
