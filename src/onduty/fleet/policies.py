"""Central policy bundles: one policy for the managers of every region, published once to a
schema the regions share (`postgresql://…?schema=onduty_central`) and named by its content hash.

A bundle is a whole configuration file, kept as it was published (validated first, comments
and all), beside the policy document it yields (`Config.policy_document()`). Its version is
that document's hash, `Config.version`: the version every manager records in its
`PolicyActivated`. A manager takes the policy sections from the bundle and keeps its own shell
settings — its store, bus, fleet section, actuators, access — (`Bundle.apply_to`), so one bundle
serves regions whose stores and actuators differ.

Publishing stores the bundle (once per version) and makes it the active one. Every activation
is kept, with who made it and from which file: the latest is the active bundle, the rest are
history, and going back to an earlier policy is publishing its file again. A manager polls
`PolicyBundles.active_version()` (one indexed row) every few seconds and, when the version is
not the one it runs, reads the bundle with `changed_from`.

Shell code in the fleet layer: it does I/O on PostgreSQL; the core only ever sees the
`PolicyActivated` a manager records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import yaml
from psycopg import sql
from psycopg.types.json import Jsonb

from onduty.config import Config, parse_config_text
from onduty.log.pg import (
    LazyConnection,
    StoreURL,
    StoreURLError,
    parse_store_url,
    redact,
)

DEFAULT_CENTRAL_SCHEMA = "onduty_central"
"""The name the examples and messages give the shared schema (a URL must name it)."""
STATEMENT_TIMEOUT_S = 10.0
DEFAULT_HISTORY = 20

POLICY_SECTIONS: tuple[str, ...] = tuple(Config().policy_document())
"""The sections of a configuration that make its policy (what the core decides by); the others
are each process's own."""


class Change(StrEnum):
    PUBLISHED = "published"
    """A version never published before: stored, and now the active bundle."""
    REACTIVATED = "reactivated"
    """A version published before, active again (going back to an earlier policy)."""
    UNCHANGED = "unchanged"
    """The version is already the active bundle: nothing was written."""


@dataclass(frozen=True)
class Bundle:
    """A published policy: its version (the policy's content hash), the policy document, the
    configuration file it came from (as published), where from and by whom."""

    version: str
    document: dict[str, Any]
    text: str
    source: str
    published_at: datetime
    published_by: str

    def config(self) -> Config:
        """The configuration as published, validated again here. Raises `ConfigError` when this
        onduty cannot read it (a bundle published by a newer one)."""
        return parse_config_text(self.text, f"policy bundle {self.version} (from {self.source})")

    def apply_to(self, local: Config) -> Config:
        """`local` (a process's own configuration) running this bundle's policy: the policy
        sections are the bundle's, everything else stays local. Its `version` is the one this
        onduty computes for the bundle's policy (the bundle's, unless the two onduty versions
        fill in different defaults)."""
        published = self.config()
        return local.model_copy(
            update={section: getattr(published, section) for section in POLICY_SECTIONS}
        )


@dataclass(frozen=True)
class Publication:
    """What publishing did (`change`), in a sentence (`reason`), and the bundle now active."""

    bundle: Bundle
    change: Change
    reason: str


@dataclass(frozen=True)
class Activation:
    """One time a bundle became the active one; `active` marks the latest."""

    version: str
    activated_at: datetime
    activated_by: str
    source: str
    published_at: datetime
    active: bool


def central_url(url: str | StoreURL) -> StoreURL:
    """The central schema `url` names. It must name one (`?schema=onduty_central`): without
    it a URL means a region's default schema, and a central policy there would be one
    region's, silently."""
    if isinstance(url, StoreURL):
        return url
    parsed = parse_store_url(url)  # a URL that is no store's is refused first, as written
    if not any(key == "schema" for key, _ in parse_qsl(urlsplit(url).query, True)):
        raise StoreURLError(
            f"store {redact(url)}: name the schema the regions share, e.g. "
            f"?schema={DEFAULT_CENTRAL_SCHEMA}"
        )
    return parsed


def config_text(config: Config) -> str:
    """A configuration as a file's text that reads back as the same configuration (for a
    bundle published from a `Config` without its file)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


class _Statements:
    """The statements of one central schema, composed once."""

    def __init__(self, url: StoreURL) -> None:
        bundles, activations = url.table("policy_bundles"), url.table("policy_activations")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(bundles=bundles, activations=activations)

        self.schema = [
            q(
                "CREATE TABLE IF NOT EXISTS {bundles} ("
                " version text PRIMARY KEY, document jsonb NOT NULL, config_text text NOT NULL,"
                " source text NOT NULL, published_at timestamptz NOT NULL,"
                " published_by text NOT NULL)"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {activations} ("
                " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " version text NOT NULL REFERENCES {bundles} (version),"
                " activated_at timestamptz NOT NULL, activated_by text NOT NULL,"
                " source text NOT NULL)"
            ),
        ]
        columns = "b.version, b.document, b.config_text, b.source, b.published_at, b.published_by"
        self.active_version = q("SELECT version FROM {activations} ORDER BY id DESC LIMIT 1")
        # One round trip for a poller: the active version always, the rest only when it is not
        # the one the poller runs (a few bytes a poll while nothing changes).
        unless_known = ", ".join(
            f"CASE WHEN b.version IS DISTINCT FROM %(known)s THEN {column} END"
            for column in columns.split(", ")[1:]
        )
        self.changed_from = q(
            f"SELECT b.version, {unless_known} FROM"
            " (SELECT version FROM {activations} ORDER BY id DESC LIMIT 1) AS a"
            " JOIN {bundles} AS b USING (version)"
        )
        self.bundle = q(f"SELECT {columns} FROM {{bundles}} AS b WHERE b.version = %(version)s")
        self.insert = q(
            "INSERT INTO {bundles} (version, document, config_text, source, published_at,"
            " published_by) VALUES (%(version)s, %(document)s, %(text)s, %(source)s, now(),"
            " %(actor)s) ON CONFLICT (version) DO NOTHING"
        )
        self.activate = q(
            "INSERT INTO {activations} (version, activated_at, activated_by, source)"
            " VALUES (%(version)s, now(), %(actor)s, %(source)s)"
        )
        self.history = q(
            "SELECT a.version, a.activated_at, a.activated_by, a.source, b.published_at,"
            " a.id = max(a.id) OVER () FROM {activations} AS a JOIN {bundles} AS b"
            " USING (version) ORDER BY a.id DESC LIMIT %(limit)s"
        )


def _bundle(row: tuple[Any, ...]) -> Bundle:
    version, document, text, source, published_at, published_by = row
    return Bundle(str(version), dict(document), str(text), str(source), published_at, published_by)


class PolicyBundles:
    """The central bundles in the schema `url` names (it must name one), on one connection
    (opened on first use, opened again after it broke). One thread uses it at a time.

    Reading a schema where nothing was ever published finds nothing (and creates nothing);
    publishing creates the tables. A database that cannot be reached raises
    `DatabaseUnavailable`: every call may simply be made again."""

    def __init__(self, url: str | StoreURL) -> None:
        self.url = central_url(url)
        self._q = _Statements(self.url)
        # Reading a schema where nothing was ever published creates nothing: only a publish
        # makes the tables.
        self._link = LazyConnection(
            self.url, schema=self._q.schema, statement_timeout=STATEMENT_TIMEOUT_S
        )

    def _read(self, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a read; none while nothing was ever published here."""
        try:
            with self._link.using(create=False) as conn:
                return conn.execute(statement, params).fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def publish(
        self, config: Config, source: str, actor: str, *, text: str | None = None
    ) -> Publication:
        """Make `config`'s policy the active bundle. `text` is the file it was read from (kept
        as published); without it, the configuration is written out as YAML.

        A version published before is not stored again: when it is the active one nothing
        changes, otherwise it becomes active again. Publishers racing each other are taken one
        at a time. Raises `ValueError` when `text` is not the configuration given."""
        version = config.version
        if text is None:
            text = config_text(config)
        elif (read := parse_config_text(text, source)).version != version:
            raise ValueError(f"{source}: the text's policy is {read.version}, not {version}")
        params = {
            "version": version,
            "document": Jsonb(config.policy_document()),
            "text": text,
            "source": source,
            "actor": actor,
        }
        with self._link.using() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"onduty-policy:{self.url.schema}",),
            )
            current = conn.execute(self._q.active_version).fetchone()
            created = conn.execute(self._q.insert, params).rowcount == 1
            if current is None or current[0] != version:
                conn.execute(self._q.activate, params)
            row = conn.execute(self._q.bundle, {"version": version}).fetchone()
        assert row is not None  # inserted, or there before, in the transaction above
        bundle = _bundle(row)
        where = f"in {self.url.schema}"
        if created:
            return Publication(
                bundle, Change.PUBLISHED, f"{version} published {where}: every manager activates it"
            )
        when = f"{bundle.published_at:%Y-%m-%d %H:%M:%S %Z} by {bundle.published_by}"
        if current is not None and current[0] == version:
            reason = (
                f"{version} is already the active bundle {where} (published {when}): "
                "nothing changed"
            )
            if bundle.text != text:
                reason += (
                    "; this file differs from the published one outside the policy, and the "
                    "published text is kept"
                )
            return Publication(bundle, Change.UNCHANGED, reason)
        return Publication(
            bundle,
            Change.REACTIVATED,
            f"{version} was published before ({when}) and is the active bundle {where} again",
        )

    def active_version(self) -> str | None:
        """The version of the active bundle (None before any was published): the cheap poll."""
        rows = self._read(self._q.active_version, {})
        return str(rows[0][0]) if rows else None

    def active(self) -> Bundle | None:
        """The active bundle, or None before any was published."""
        return self.changed_from(None)

    def changed_from(self, known: str | None) -> Bundle | None:
        """The active bundle when its version is not `known` (the one the caller runs); None
        when it is, or when none was published. One statement, a few bytes while nothing
        changes: made to be polled."""
        rows = self._read(self._q.changed_from, {"known": known})
        if not rows or rows[0][1] is None:
            return None
        return _bundle(rows[0])

    def get(self, version: str) -> Bundle | None:
        """A bundle published at some time, active or not."""
        rows = self._read(self._q.bundle, {"version": version})
        return _bundle(rows[0]) if rows else None

    def history(self, limit: int = DEFAULT_HISTORY) -> list[Activation]:
        """The latest `limit` activations, newest (the active one) first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        return [
            Activation(str(version), activated_at, str(by), str(source), published_at, bool(live))
            for version, activated_at, by, source, published_at, live in self._read(
                self._q.history, {"limit": limit}
            )
        ]

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> PolicyBundles:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def publish(
    url: str, config: Config, source: str, actor: str, *, text: str | None = None
) -> Publication:
    """Publish `config`'s policy as the active bundle of the central schema `url`."""
    with PolicyBundles(url) as bundles:
        return bundles.publish(config, source, actor, text=text)


def active(url: str) -> Bundle | None:
    """The active bundle of the central schema `url`, or None before any was published."""
    with PolicyBundles(url) as bundles:
        return bundles.active()


def history(url: str, limit: int = DEFAULT_HISTORY) -> list[Activation]:
    """The latest `limit` activations of the central schema `url`, newest first."""
    with PolicyBundles(url) as bundles:
        return bundles.history(limit)
