"""Central policy bundles on the real server: published once per version, the latest activation
active, cheap to poll, rebuilt into the configuration a manager runs."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from onduty.config import Config, parse_config_text
from onduty.fleet import DatabaseUnavailable, StoreURL, StoreURLError
from onduty.fleet.policies import (
    POLICY_SECTIONS,
    Change,
    PolicyBundles,
    active,
    central_url,
    history,
    publish,
)
from tests.fleet.conftest import SERVER

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVE = EXAMPLES / "serve" / "onduty.yaml"
POLICY = EXAMPLES / "policy" / "onduty.yaml"


def read(path: Path) -> tuple[Config, str]:
    text = path.read_text()
    return parse_config_text(text, str(path)), text


def url_text(store: StoreURL) -> str:
    return f"{store.conninfo}?schema={store.schema}"


def test_a_published_bundle_is_the_active_one_with_its_file_as_published(
    store: StoreURL,
) -> None:
    config, text = read(SERVE)
    publication = publish(url_text(store), config, "serve.yaml", "alice", text=text)
    assert publication.change is Change.PUBLISHED
    assert publication.reason == (
        f"{config.version} published in {store.schema}: every manager activates it"
    )
    bundle = active(url_text(store))
    assert bundle == publication.bundle
    assert bundle is not None
    assert (bundle.version, bundle.source, bundle.published_by) == (
        config.version,
        "serve.yaml",
        "alice",
    )
    assert bundle.text == text  # comments and all
    assert bundle.document == config.policy_document()
    assert bundle.config() == config


def test_publishing_the_active_version_again_is_a_no_op_that_says_so(store: StoreURL) -> None:
    config, text = read(SERVE)
    with PolicyBundles(store) as bundles:
        first = bundles.publish(config, "serve.yaml", "alice", text=text)
        again = bundles.publish(config, "elsewhere.yaml", "bob", text=text)
        assert again.change is Change.UNCHANGED
        assert "is already the active bundle" in again.reason
        assert "nothing changed" in again.reason
        assert again.bundle == first.bundle  # still alice's, from serve.yaml
        assert len(bundles.history()) == 1
        # The same policy with other shell settings: the same version, and the reply says the
        # published text was kept.
        elsewhere = text.replace("sqlite:///onduty.db", "sqlite:///elsewhere.db")
        other = bundles.publish(config, "other.yaml", "bob", text=elsewhere)
        assert other.change is Change.UNCHANGED
        assert "published text is kept" in other.reason
        assert bundles.get(config.version) == first.bundle


def test_an_earlier_version_published_again_is_active_again_and_history_keeps_both(
    store: StoreURL,
) -> None:
    serve, serve_text = read(SERVE)
    policy, policy_text = read(POLICY)
    with PolicyBundles(store) as bundles:
        bundles.publish(serve, "serve.yaml", "alice", text=serve_text)
        bundles.publish(policy, "policy.yaml", "bob", text=policy_text)
        back = bundles.publish(serve, "serve.yaml", "carol", text=serve_text)
        assert back.change is Change.REACTIVATED
        assert "published before" in back.reason and "by alice" in back.reason
        assert bundles.active_version() == serve.version
        steps = bundles.history()
    assert [(step.version, step.activated_by, step.active) for step in steps] == [
        (serve.version, "carol", True),
        (policy.version, "bob", False),
        (serve.version, "alice", False),
    ]
    assert steps[0].published_at == steps[2].activated_at  # published once, activated twice
    assert steps[0].activated_at > steps[0].published_at
    assert [step.version for step in history(url_text(store), limit=1)] == [serve.version]


def test_a_poller_gets_the_bundle_only_when_the_active_version_is_not_its_own(
    store: StoreURL,
) -> None:
    serve, serve_text = read(SERVE)
    policy, policy_text = read(POLICY)
    with PolicyBundles(store) as bundles:
        assert bundles.active_version() is None
        assert bundles.changed_from(None) is None
        bundles.publish(serve, "serve.yaml", "alice", text=serve_text)
        assert bundles.changed_from(serve.version) is None
        first = bundles.changed_from(None)
        assert first is not None and first.version == serve.version
        bundles.publish(policy, "policy.yaml", "bob", text=policy_text)
        moved = bundles.changed_from(serve.version)
        assert moved is not None and moved.version == policy.version
        assert moved.text == policy_text


def test_reading_where_nothing_was_published_finds_nothing_and_creates_nothing(
    store: StoreURL,
) -> None:
    with PolicyBundles(store) as bundles:
        assert (bundles.active_version(), bundles.active(), bundles.history()) == (None, None, [])
        assert bundles.get("sha256:0000000000000000") is None
    with psycopg.connect(SERVER) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (store.schema,))
        assert found.fetchone() is None


def test_a_manager_runs_the_bundles_policy_with_its_own_shell_settings(store: StoreURL) -> None:
    policy, policy_text = read(POLICY)
    local = parse_config_text(
        SERVE.read_text().replace(
            "store: sqlite:///onduty.db",
            "store: postgresql://db/ops?schema=onduty_eu\nbus: nats://127.0.0.1:4222\n"
            "fleet: {region: eu, partitions: 4}",
        )
    )
    bundle = publish(url_text(store), policy, "policy.yaml", "alice", text=policy_text).bundle
    running = bundle.apply_to(local)
    assert running.version == bundle.version == policy.version
    assert running.policy_document() == policy.policy_document()
    for section in ("store", "bus", "fleet", "actuators", "access", "server", "sources"):
        assert getattr(running, section) == getattr(local, section), section
    assert set(POLICY_SECTIONS) >= {"services", "runbooks", "policy", "correlation"}


def test_racing_publishers_store_a_version_once_and_activate_it_once(store: StoreURL) -> None:
    config, text = read(SERVE)
    changes: list[Change] = []
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def publisher(index: int) -> None:
        try:
            with PolicyBundles(store) as bundles:
                start.wait()
                changes.append(bundles.publish(config, "serve.yaml", f"p{index}", text=text).change)
        except BaseException as error:  # reported below, with the others
            failures.append(error)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert sorted(changes) == sorted([Change.PUBLISHED] + [Change.UNCHANGED] * 5)
    assert len(history(url_text(store))) == 1


def test_a_text_that_is_not_the_configuration_given_is_refused(store: StoreURL) -> None:
    serve, _ = read(SERVE)
    _, policy_text = read(POLICY)
    with pytest.raises(ValueError, match=f"not {serve.version}"):
        publish(url_text(store), serve, "serve.yaml", "alice", text=policy_text)
    assert active(url_text(store)) is None


def test_a_config_published_without_its_file_reads_back_as_itself(store: StoreURL) -> None:
    policy, _ = read(POLICY)
    bundle = publish(url_text(store), policy, "api", "alice").bundle
    assert bundle.config().version == policy.version
    assert bundle.config().policy_document() == policy.policy_document()


def test_a_central_url_must_name_its_schema() -> None:
    assert central_url("postgresql://db/ops?schema=Policies").schema == "policies"
    with pytest.raises(StoreURLError, match=r"name the schema the regions share, e\.g\."):
        central_url("postgresql://db/ops?sslmode=disable")
    with pytest.raises(StoreURLError, match="store mysql://db: not a postgresql://"):
        central_url("mysql://db")


def test_a_server_that_cannot_be_reached_is_reported() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        active("postgresql://postgres@127.0.0.1:1/test?schema=x")
