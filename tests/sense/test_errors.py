from __future__ import annotations

from onduty import sense
from onduty.sense import FORMATS, IngestError
from onduty.sense.pagerduty import parse_with_keys


def test_as_json_is_the_error_body() -> None:
    error = IngestError(422, "required field is missing", "alerts[3].labels")
    assert error.as_json() == {"error": "required field is missing", "field": "alerts[3].labels"}
    assert str(error) == "alerts[3].labels: required field is missing"
    assert IngestError(400, "malformed JSON: truncated").as_json() == {
        "error": "malformed JSON: truncated",
        "field": None,
    }


def test_public_api() -> None:
    assert set(FORMATS) == {
        "alertmanager", "grafana", "prometheus", "pagerduty", "cloudevents", "native"
    }  # fmt: skip
    assert FORMATS["alertmanager"] is sense.parse_alertmanager
    assert FORMATS["grafana"] is sense.parse_alertmanager  # Alertmanager's shape, version "1"
    assert FORMATS["prometheus"] is sense.parse_promalerts
    assert FORMATS["pagerduty"] is sense.parse_pagerduty
    assert FORMATS["cloudevents"] is sense.parse_cloudevents
    assert FORMATS["native"] is sense.parse_native
    assert sense.parse_pagerduty_with_keys is parse_with_keys
