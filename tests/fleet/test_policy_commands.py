"""`onduty policy publish` and `onduty policy bundles` as a user meets them, against the real
server: a table of what was activated, one-line errors, exit 2 on bad input."""

from __future__ import annotations

from pathlib import Path

from onduty.configfile import load_config
from onduty.fleet import StoreURL
from tests.run_cli import onduty

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVE = EXAMPLES / "serve" / "onduty.yaml"
POLICY = EXAMPLES / "policy" / "onduty.yaml"


def central(store: StoreURL) -> str:
    return f"{store.conninfo}?schema={store.schema}"


def test_publish_then_list_the_bundles(store: StoreURL) -> None:
    serve, policy = load_config(SERVE).version, load_config(POLICY).version
    first = onduty("policy", "publish", str(SERVE), "--central", central(store), "--by", "alice")
    assert first.returncode == 0, first.stderr
    assert f"{serve} published in {store.schema}" in first.stdout
    again = onduty("policy", "publish", str(SERVE), "--central", central(store))
    assert again.returncode == 0, again.stderr
    assert f"{serve} is already the active bundle" in again.stdout
    assert "nothing changed" in again.stdout
    other = onduty(
        "policy", "publish", str(POLICY), "--by", "bob", env={"ONDUTY_CENTRAL": central(store)}
    )
    assert other.returncode == 0, other.stderr
    listed = onduty("policy", "bundles", "--central", central(store))
    assert listed.returncode == 0, listed.stderr
    assert f"active: {policy} since" in listed.stdout
    rows = [line for line in listed.stdout.splitlines() if "sha256:" in line][1:]
    assert [row.split()[1] for row in rows] == [policy, serve]
    assert "bob" in rows[0] and "alice" in rows[1]


def test_the_central_schema_defaults_to_the_files_fleet_central(
    store: StoreURL, tmp_path: Path
) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text(SERVE.read_text() + f"\nfleet:\n  central: {central(store)}\n")
    published = onduty("policy", "publish", str(config), unset=("ONDUTY_CENTRAL",))
    assert published.returncode == 0, published.stderr
    assert f"published in {store.schema}" in published.stdout
    listed = onduty("policy", "bundles", "-c", str(config), unset=("ONDUTY_CENTRAL",))
    assert listed.returncode == 0, listed.stderr
    assert f"active: {load_config(config).version} since" in listed.stdout
    nowhere = onduty("policy", "publish", str(SERVE), unset=("ONDUTY_CENTRAL",))
    assert nowhere.returncode == 2
    assert "where is the central schema?" in nowhere.stderr


def test_an_invalid_file_is_refused_naming_its_problems_and_nothing_is_published(
    store: StoreURL, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: a\n    autonomy: banana\n")
    refused = onduty("policy", "publish", str(bad), "--central", central(store))
    assert refused.returncode == 2
    assert "invalid configuration" in refused.stderr
    assert "services[0].autonomy" in refused.stderr and "(line 3)" in refused.stderr
    listed = onduty("policy", "bundles", "--central", central(store))
    assert listed.returncode == 0
    assert f"no policy bundle was published in {store.schema} yet" in listed.stdout


def test_a_policy_with_lint_errors_is_not_published(store: StoreURL, tmp_path: Path) -> None:
    linted = tmp_path / "lint.yaml"
    linted.write_text(
        "policy:\n  guardrails:\n    - {name: r, when: 'service.nme == \"x\"', effect: deny}\n"
    )
    refused = onduty("policy", "publish", str(linted), "--central", central(store))
    assert refused.returncode == 2
    assert "service has no field 'nme'" in refused.stdout
    assert "1 error in the policy: not published" in refused.stderr
    assert "no policy bundle" in onduty("policy", "bundles", "--central", central(store)).stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    reachable = "postgresql://postgres@127.0.0.1:5432/test?schema=unused"
    cases = [
        (
            ("policy", "publish", str(tmp_path / "missing.yaml"), "--central", reachable),
            "missing.yaml: cannot read the file: No such file or directory",
        ),
        (
            ("policy", "bundles", "--central", "mysql://db/ops"),
            "--central: store mysql://db/ops: not a postgresql://HOST/DATABASE URL",
        ),
        (
            ("policy", "bundles", "--central", "postgresql://postgres@127.0.0.1:1/test?schema=c"),
            "--central: cannot connect to postgresql://postgres@127.0.0.1:1/test",
        ),
        (
            ("policy", "publish", str(SERVE), "--central", "postgresql://db/x?schema=1x"),
            "schema '1x' must be a plain identifier",
        ),
        (
            ("policy", "bundles", "--central", "postgresql://db/x"),
            "--central: store postgresql://db/x: name the schema the regions share",
        ),
    ]
    for args, message in cases:
        result = onduty(*args, unset=("ONDUTY_CENTRAL",))
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
