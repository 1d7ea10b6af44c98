"""Similar incidents: for an incident, the closed incidents most like it and what was done about
them ("have we seen this before, and what fixed it?").

`SimilarIncidents` is a read model fed events in log order. Each incident becomes a document:
its title and service, the labels and annotations of the signals that opened it or joined it,
and the actions started for it with how each ended (verified, verification failed, failed,
outcome unknown, succeeded without a verdict; undone or not). `IncidentResolved` closes it and
makes it retrievable. Memory is bounded: the `keep` most recently closed incidents stay (older
ones are forgotten by this model; the log keeps them), each with at most `TERMS_KEPT` distinct
terms, `ACTIONS_KEPT` actions and `TEXT_CHARS` of annotation text.

Retrieval is lexical by default: Okapi BM25 over the documents' terms (`label_terms`: every
label as `name=value`, an instance-like value's family without its numeric suffix as
`name~family`, the words of values; `words` of titles and annotations), its score divided by
the query's score against itself, so that 1.0 is "the same terms" and the threshold reads the
same for any query. BM25 is written here, in a few lines, rather than taken from a library
(rank-bm25, bm25s): their indexes are built in one batch, while this one changes an incident at a
time (closing adds it to the statistics, leaving removes it). With an
`Embedder` (`onduty.readmodel.embeddings`, the optional `embeddings` extra) it is the cosine
similarity of sentence embeddings of each document's text instead.

`summarize(matches)` is the one line the escalation message and the console show ("3 similar
incidents; a rollback of payments-api fixed 2 of them"); `for_prompt(matches)` the compact list
a language model is given."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from onduty.events import Event
from onduty.textsafe import visible

if TYPE_CHECKING:
    from onduty.log import EventLog

CLOSED_KEPT = 2_000
"""Closed incidents kept for retrieval unless configured otherwise (`similar.keep`)."""
TERMS_KEPT = 128
"""Distinct terms one incident's document keeps (the first seen: its title, its first signal's
labels and annotations, then those of signals that joined it)."""
SIGNALS_FOLDED = 20
"""Signals of one incident whose labels and annotations are folded into its document (the
first ones): a flood of 40,000 alike signals says no more than its first few."""
ACTIONS_KEPT = 20
"""Actions one incident's document keeps (the first; a proposal that never started gives way
to one that does)."""
LABELS_KEPT = 32
"""Labels of its first signal an incident shows with a match."""
VALUE_CHARS = 200
"""A label value is cut to this many characters."""
TEXT_CHARS = 600
"""Annotation text kept per incident (its first signals' summaries and descriptions)."""
RECENT_SIGNALS = 64
"""Firing signals remembered until the decision they cause names its incident (a fleet's
partitions interleave): their labels (at most `SIGNAL_LABELS`) and annotation text."""
SIGNAL_LABELS = 64
"""Labels of one signal that count (the first by name): a signal with thousands is cut."""
MIN_SCORE = {"lexical": 0.2, "embeddings": 0.6}
"""The least similarity a match needs, by method, unless configured (`similar.min_score`)."""

K1 = 1.2
B = 0.75
"""BM25's term-frequency saturation and length normalisation (the usual values)."""
BOOSTS = {"alertname": 2.0}
"""Labels whose match counts more than its rarity says: the same alert is what "seen this
before" means first (another alert on the same instance comes after it)."""

Outcome = Literal[
    "proposed",
    "running",
    "succeeded",
    "verified",
    "verification failed",
    "failed",
    "outcome unknown",
]
"""How an action ended, as far as the log says: `succeeded` is an action that ran without error
and got no verdict (the incident resolved otherwise, or had no verification)."""

_OUTCOMES: dict[str, Outcome] = {
    "ActionStarted": "running",
    "ActionSucceeded": "succeeded",
    "ActionFailed": "failed",
    "ActionOutcomeUnknown": "outcome unknown",
    "VerificationPassed": "verified",
    "VerificationFailed": "verification failed",
}


# ---------------------------------------------------------------------------- terms

_STOP = (
    "a an and are as at be been but by for from has have in is it its of on or than that the "
    "this to was were will with not no"
)
STOP_WORDS = frozenset(_STOP.split())
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
"""Words of a value: camel case and separators split ("HighMemoryUsage", "OOMKilled",
"payments-api" → high memory usage, oom killed, payments api)."""
_PORT = re.compile(r":[0-9]{1,5}$")
_IPV4 = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
_SEGMENT = re.compile(r"[-_]")


def words(text: str) -> list[str]:
    """The words of `text` worth matching on, lower case: no stop words, no numbers, no single
    letters."""
    found = []
    for word in _WORD.findall(text):
        lowered = word.lower()
        if len(lowered) > 1 and not lowered.isdigit() and lowered not in STOP_WORDS:
            found.append(lowered)
    return found


def family(value: str) -> str:
    """An instance-like value without what tells its members apart: `web-3` → `web`,
    `db-01.example.com:9100` → `db`, `payments-api-5d8f7c9b6-x2x7k` → `payments-api`; "" when
    that is the value itself, an address, or too short to mean anything."""
    if not any(char.isdigit() for char in value):
        return ""
    host = _PORT.sub("", value)
    if _IPV4.match(host):
        return ""
    host = host.split(".", 1)[0]
    parts = _SEGMENT.split(host)
    while len(parts) > 1 and any(char.isdigit() for char in parts[-1]):
        parts.pop()
    stem = host[: sum(len(part) + 1 for part in parts) - 1].rstrip("0123456789-_")
    return stem if len(stem) > 1 and stem != value else ""


def label_terms(labels: Mapping[str, str]) -> list[str]:
    """Each label as `name=value`, its family as `name~family`, and the words of its value."""
    terms: list[str] = []
    for name, raw in sorted(labels.items()):  # the same terms whatever order they came in
        value = str(raw)[:VALUE_CHARS].strip()
        if not value:
            continue
        key = name.lower()
        lowered = value.lower()
        terms.append(f"{key}={lowered}")
        stem = family(lowered)
        if stem:
            terms.append(f"{key}~{stem}")
        if not _is_url(lowered):
            terms += words(value)
    return terms


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def annotation_text(annotations: Mapping[str, str]) -> str:
    """The prose of a signal's annotations (summary first; links left out), at most
    `TEXT_CHARS`."""
    ordered = sorted(annotations.items(), key=lambda item: (item[0] != "summary", item[0]))
    return " ".join(
        " ".join(str(value)[: TEXT_CHARS * 2].split())
        for name, value in ordered
        if value and "url" not in name.lower() and not _is_url(str(value).strip())
    )[:TEXT_CHARS]


def signal_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A signal's labels as a document keeps them: sorted by name, at most `SIGNAL_LABELS`,
    each value at most `VALUE_CHARS`."""
    named = sorted(labels.items())[:SIGNAL_LABELS]
    return {str(name): str(value)[:VALUE_CHARS] for name, value in named}


def terms_of(title: str, service: str | None) -> list[str]:
    """The terms of an incident's title and service: the first of its document's."""
    terms = words(title)
    if service:
        terms.append(f"service={service.lower()}")
    return terms


# ---------------------------------------------------------------------------- what is returned


@dataclass(frozen=True, slots=True)
class PastAction:
    """One action started for a past incident and how it ended."""

    action: str
    target: str
    runbook: str
    outcome: Outcome
    undone: bool = False
    """Its undo steps ran (after a failure or a failed verification)."""

    @property
    def verified(self) -> bool:
        return self.outcome == "verified"

    def describe(self) -> str:
        """`rollback payments-api: verified`, `restart web-1: verification failed, undone`."""
        ended = f"{self.outcome}, undone" if self.undone else self.outcome
        return f"{visible(self.action)} {visible(self.target)}: {ended}"

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "runbook": self.runbook,
            "outcome": self.outcome,
            "undone": self.undone,
        }


@dataclass(frozen=True, slots=True)
class SimilarIncident:
    """A closed incident like the one asked about, with its similarity (`score`: 1.0 the same)."""

    incident_id: str
    title: str
    service: str | None
    score: float
    opened_at: datetime
    closed_at: datetime
    resolution: str
    labels: Mapping[str, str]
    """Its first signal's labels (at most `LABELS_KEPT`)."""
    actions: tuple[PastAction, ...]
    """The actions started for it, in the order they started."""

    @property
    def summary(self) -> str:
        """One line: what was done and how it ended, or that nothing was done."""
        if not self.actions:
            done = "no action taken"
        else:
            done = "; ".join(action.describe() for action in self.actions)
        return f"{done} (resolved: {visible(self.resolution) or 'closed'})"

    def as_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "title": self.title,
            "service": self.service,
            "score": round(self.score, 3),
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat(),
            "resolution": self.resolution,
            "labels": dict(self.labels),
            "actions": [action.as_json() for action in self.actions],
            "summary": self.summary,
        }


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _them(count: int, total: int) -> str:
    if total == 1:
        return "it"
    return f"{count} of them"


def summarize(matches: Sequence[SimilarIncident]) -> str:
    """One line about `matches`: how many, and which action (and target) verified in how many
    of them — "3 similar incidents; a rollback of payments-api fixed 2 of them" — or that none
    verified, or that nothing was done."""
    total = len(matches)
    if not total:
        return "No similar incidents."
    head = f"{total} similar incident{'s' if total != 1 else ''}"
    fixed: dict[tuple[str, str], set[str]] = {}
    acted = False
    for match in matches:  # the best match first: it wins a tie
        for action in match.actions:
            acted = True
            if action.verified:
                fixed.setdefault((action.action, action.target), set()).add(match.incident_id)
    if not fixed:
        where = "it" if total == 1 else "any of them"
        what = "no action verified" if acted else "no action was taken"
        return f"{head}; {what} in {where}"
    order = {key: position for position, key in enumerate(fixed)}
    ranked = sorted(fixed, key=lambda key: (-len(fixed[key]), order[key]))[:2]
    parts = []
    for verb, target in ranked:
        name, where = visible(verb), visible(target)
        parts.append(
            f"{_article(name)} {name} of {where} fixed {_them(len(fixed[verb, target]), total)}"
        )
    return f"{head}; " + ", and ".join(parts)


def for_prompt(matches: Sequence[SimilarIncident]) -> list[dict[str, Any]]:
    """The matches as a compact list for a language model's prompt: text cut short, times in
    ISO 8601, the similarity to two decimals. The values are untrusted data, as in any prompt."""
    return [
        {
            "incident_id": match.incident_id,
            "title": match.title[:200],
            "service": match.service,
            "similarity": round(match.score, 2),
            "closed_at": match.closed_at.isoformat(),
            "resolution": match.resolution[:200],
            "labels": {name: value[:100] for name, value in list(match.labels.items())[:12]},
            "actions": [
                {
                    "action": action.action,
                    "target": action.target[:200],
                    "runbook": action.runbook,
                    "outcome": action.outcome,
                    "undone": action.undone,
                }
                for action in match.actions
            ],
        }
        for match in matches
    ]


# ---------------------------------------------------------------------------- documents


@dataclass(slots=True)
class _Action:
    command_id: str
    action: str
    target: str
    runbook: str
    outcome: Outcome = "proposed"
    undone: bool = False

    def past(self) -> PastAction:
        return PastAction(self.action, self.target, self.runbook, self.outcome, self.undone)


@dataclass(slots=True)
class Document:
    """What retrieval knows of one incident."""

    incident_id: str
    title: str
    service: str | None
    opened_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    terms: dict[str, int] = field(default_factory=dict)
    length: int = 0
    """Its terms counted with repeats (BM25's document length)."""
    text: str = ""
    """Its signals' annotation text (at most `TEXT_CHARS`)."""
    signals: int = 0
    """Signals folded into it (at most `SIGNALS_FOLDED`)."""
    actions: list[_Action] = field(default_factory=list)
    closed_at: datetime | None = None
    closed_seq: int = 0
    resolution: str = ""

    def add_terms(self, terms: Iterable[str]) -> None:
        kept = self.terms
        for term in terms:
            if term in kept:
                kept[term] += 1
            elif len(kept) < TERMS_KEPT:
                kept[term] = 1
            else:
                continue
            self.length += 1

    def fold_signal(self, labels: Mapping[str, str], prose: str) -> None:
        """Add a signal's labels (`signal_labels`) and annotation text (`annotation_text`)."""
        if self.signals >= SIGNALS_FOLDED:
            return
        self.signals += 1
        if not self.labels:
            self.labels = dict(list(labels.items())[:LABELS_KEPT])
        self.add_terms(label_terms(labels))
        room = TEXT_CHARS - len(self.text)
        if prose and room > 1 and prose not in self.text:
            added = prose[: room - 1] if self.text else prose[:room]
            self.text = f"{self.text} {added}" if self.text else added
            self.add_terms(words(added))

    def sentence(self) -> str:
        """Its text as an embedding model reads it."""
        labels = ", ".join(f"{name}={value}" for name, value in self.labels.items())
        return ". ".join(
            part for part in (self.title, self.service or "", labels, self.text) if part
        )

    def match(self, score: float) -> SimilarIncident:
        assert self.closed_at is not None
        return SimilarIncident(
            incident_id=self.incident_id,
            title=self.title,
            service=self.service,
            score=score,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            resolution=self.resolution,
            labels=dict(self.labels),
            actions=tuple(a.past() for a in self.actions if a.outcome != "proposed"),
        )


class Embedder(Protocol):
    """Sentence embeddings: `similarities(query, documents)` is the cosine similarity of the
    query text to each (key, text) document, in their order. The keys let it keep the
    documents' vectors between calls (a closed incident's text does not change)."""

    name: str

    def similarities(self, query: str, documents: Sequence[tuple[str, str]]) -> list[float]: ...


class UnknownIncident(KeyError):
    """The incident is not in the read model (never seen, or closed long enough ago to have
    left it: `document_from_log` rebuilds it)."""


# ---------------------------------------------------------------------------- the read model


class SimilarIncidents:
    """Incidents as documents to retrieve by similarity; feed it events in log order.

    `keep`: closed incidents kept (the most recently closed). `embedder`: rank by sentence
    embeddings instead of BM25. `min_score`: the least similarity a match needs (default: by
    method, `MIN_SCORE`). Thread-safe: the core's thread feeds it while the API asks."""

    def __init__(
        self,
        keep: int = CLOSED_KEPT,
        *,
        embedder: Embedder | None = None,
        min_score: float | None = None,
    ) -> None:
        self.keep = keep
        self.embedder = embedder
        self.min_score = min_score
        self._lock = threading.Lock()
        self.documents: dict[str, Document] = {}
        """Open incidents and the closed ones kept, by id, in the order they opened."""
        self.closed: deque[str] = deque()
        """The closed incidents kept, in the order they closed."""
        self._commands: dict[str, str] = {}
        """Action command ids → their incident, while it is kept (an undo names its action)."""
        self._signals: OrderedDict[str, tuple[dict[str, str], str]] = OrderedDict()
        """The latest firing signals by event id: (labels, annotation text)."""
        self._df: Counter[str] = Counter()
        """In how many closed documents each term occurs."""
        self._lengths = 0
        """The closed documents' lengths added up (for the average)."""

    @property
    def method(self) -> str:
        return "embeddings" if self.embedder is not None else "lexical"

    # ------------------------------------------------------------------ folding

    def feed_all(self, events: Iterable[Event]) -> SimilarIncidents:
        for event in events:
            self.feed(event)
        return self

    def feed(self, event: Event) -> None:
        kind = event.type
        if kind not in _FOLDED:
            return
        with self._lock:
            self._feed(event)

    def _feed(self, event: Event) -> None:
        kind, data = event.type, event.data
        if kind == "SignalReceived":
            if data.get("status") == "firing":
                self._signals[event.id] = (
                    signal_labels(data.get("labels") or {}),
                    annotation_text(data.get("annotations") or {}),
                )
                while len(self._signals) > RECENT_SIGNALS:
                    self._signals.popitem(last=False)
            return
        if kind == "IncidentOpened":
            if data["incident_id"] in self.documents:  # opened once: its id is its cause's
                return
            opened = Document(
                incident_id=data["incident_id"],
                title=data["title"],
                service=data.get("service"),
                opened_at=event.ts,
            )
            opened.add_terms(terms_of(opened.title, opened.service))
            self.documents[opened.incident_id] = opened
            self._signal_behind(opened, event)
            return
        incident = data.get("incident_id") or self._commands.get(
            data.get("of_command_id") or data.get("command_id") or ""
        )
        document = self.documents.get(incident or "")
        if document is None:
            return
        if kind == "IncidentUpdated":
            change = data.get("change")
            if change == "signal_added":
                self._signal_behind(document, event)
            elif change == "retitled" and data.get("detail"):
                document.title = data["detail"]
        elif kind == "IncidentResolved":
            self._close(document, event)
        elif kind == "ActionProposed":
            command = data["command_id"]
            if command not in self._commands and self._room(document):
                self._commands[command] = document.incident_id
                document.actions.append(
                    _Action(command, data["action"], data["target"], data.get("runbook", ""))
                )
        elif kind in ("UndoStarted", "UndoFinished"):
            found = _action(document, data.get("of_command_id", ""))
            if found is not None:
                found.undone = kind == "UndoStarted" or bool(data.get("ok"))
        else:
            found = _action(document, data.get("command_id", ""))
            if found is None and kind == "ActionStarted" and self._room(document):
                found = _Action(data["command_id"], data["action"], data["target"], "")
                self._commands[found.command_id] = document.incident_id
                document.actions.append(found)
            if found is not None:
                found.outcome = _OUTCOMES[kind]

    def _room(self, document: Document) -> bool:
        """Whether another action fits in `document`: when it is full, the oldest proposal
        that never started (denied, say) makes room; started ones stay."""
        actions = document.actions
        if len(actions) < ACTIONS_KEPT:
            return True
        for position, action in enumerate(actions):
            if action.outcome == "proposed":
                self._commands.pop(action.command_id, None)
                del actions[position]
                return True
        return False

    def _signal_behind(self, document: Document, event: Event) -> None:
        found = self._signals.get(event.causation_id or "")
        if found is not None and document.closed_at is None:  # a closed one is indexed
            document.fold_signal(*found)

    def _close(self, document: Document, event: Event) -> None:
        if document.closed_at is not None:  # resolved again: the first closing counts
            return
        document.closed_at, document.closed_seq = event.ts, event.seq
        document.resolution = event.data.get("reason", "")
        self._index(document)
        self.closed.append(document.incident_id)
        while len(self.closed) > self.keep:
            self._forget(self.closed.popleft())

    def _index(self, document: Document) -> None:
        self._df.update(document.terms.keys())
        self._lengths += document.length

    def _forget(self, incident_id: str) -> None:
        document = self.documents.pop(incident_id, None)
        if document is None:
            return
        self._df.subtract(document.terms.keys())
        for term in document.terms:
            if self._df[term] <= 0:
                del self._df[term]
        self._lengths -= document.length
        for action in document.actions:
            self._commands.pop(action.command_id, None)

    # ------------------------------------------------------------------ retrieval

    def known(self, incident_id: str) -> bool:
        with self._lock:
            return incident_id in self.documents

    def similar_to(self, incident_id: str, limit: int = 3) -> list[SimilarIncident]:
        """The closed incidents most like `incident_id` (open or closed), best first: at most
        `limit`, each at least `min_score` alike. Raises `UnknownIncident` when it is not
        here (`document_from_log` rebuilds one that left)."""
        with self._lock:
            document = self.documents.get(incident_id)
        if document is None:
            raise UnknownIncident(incident_id)
        return self.similar_to_document(document, limit)

    def similar_if_known(self, incident_id: str, limit: int = 3) -> list[SimilarIncident]:
        """`similar_to`, or none for an incident not (yet) here: what is added to a message or
        a prompt, which go out without it rather than wait."""
        try:
            return self.similar_to(incident_id, limit)
        except UnknownIncident:
            return []

    def similar_to_document(self, query: Document, limit: int = 3) -> list[SimilarIncident]:
        """Like `similar_to`, for a document built elsewhere (one rebuilt from the log). An
        embedder computes without holding the lock (the core's thread feeds meanwhile)."""
        if limit < 1:
            return []
        embedder = self.embedder
        with self._lock:
            candidates = [self.documents[key] for key in self.closed if key != query.incident_id]
            if embedder is None:
                return self._best(self._bm25(query, candidates), limit)
            sentence = query.sentence()
            texts = [(document.incident_id, document.sentence()) for document in candidates]
        scores = embedder.similarities(sentence, texts) if texts else []
        with self._lock:
            return self._best(list(zip(scores, candidates, strict=True)), limit)

    def _best(self, scored: list[tuple[float, Document]], limit: int) -> list[SimilarIncident]:
        least = self.min_score if self.min_score is not None else MIN_SCORE[self.method]
        best = sorted(
            ((score, document) for score, document in scored if score >= least and score > 0),
            key=lambda pair: (-pair[0], -pair[1].closed_seq),
        )
        return [document.match(score) for score, document in best[:limit]]

    def _bm25(self, query: Document, candidates: list[Document]) -> list[tuple[float, Document]]:
        """Okapi BM25 of each candidate for the query's terms, over the closed documents'
        statistics, divided by the query's score against itself."""
        count = len(self.closed)
        average = self._lengths / count if count else 1.0
        weights = {  # in term order: the same sums, to the last bit, after a restart
            term: _boost(term)
            * math.log(1 + (count - self._df[term] + 0.5) / (self._df[term] + 0.5))
            for term in sorted(query.terms)
        }
        itself = _bm25(weights, query.terms, query.length, average)
        if itself <= 0:
            return []
        return [
            (_bm25(weights, document.terms, document.length, average) / itself, document)
            for document in candidates
        ]

    # ------------------------------------------------------------------ snapshots

    def state(self) -> dict[str, Any]:
        """Everything it holds, as JSON (its configuration is the service's, not the state's)."""
        with self._lock:
            return {
                "documents": [_document_state(d) for d in self.documents.values()],
                "closed": list(self.closed),
                "commands": dict(self._commands),
                "signals": [[key, dict(a), b] for key, (a, b) in self._signals.items()],
            }

    def load(self, state: dict[str, Any]) -> None:
        """Become what `state` describes, in place (the API holds this object), bounded as
        configured here. Raises KeyError, TypeError or ValueError when it does not decode,
        changing nothing."""
        documents = {d.incident_id: d for d in map(_document, state["documents"])}
        closed = deque(str(key) for key in state["closed"])
        if any(documents.get(key) is None or documents[key].closed_at is None for key in closed):
            raise ValueError("a closed incident without its document")
        signals = OrderedDict((str(k), (dict(a), str(b))) for k, a, b in state["signals"])
        commands = {str(k): str(v) for k, v in dict(state["commands"]).items()}
        with self._lock:
            self.documents, self.closed = documents, closed
            self._commands, self._signals = commands, signals
            self._df, self._lengths = Counter(), 0
            for key in closed:
                self._index(documents[key])
            while len(self.closed) > self.keep:
                self._forget(self.closed.popleft())


_FOLDED = frozenset(
    {
        "SignalReceived",
        "IncidentOpened",
        "IncidentUpdated",
        "IncidentResolved",
        "ActionProposed",
        *_OUTCOMES,
        "UndoStarted",
        "UndoFinished",
    }
)
"""The event types the model reads; the rest pass by without taking its lock."""


def _bm25(
    weights: Mapping[str, float], terms: Mapping[str, int], length: int, average: float
) -> float:
    norm = K1 * (1 - B + B * length / average)
    score = 0.0
    for term, weight in weights.items():
        frequency = terms.get(term)
        if frequency:
            score += weight * frequency * (K1 + 1) / (frequency + norm)
    return score


def _boost(term: str) -> float:
    name, equals, _ = term.partition("=")
    return BOOSTS.get(name, 1.0) if equals else 1.0


def _action(document: Document, command_id: str) -> _Action | None:
    for action in document.actions:
        if action.command_id == command_id:
            return action
    return None


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _document_state(document: Document) -> list[Any]:
    return [
        document.incident_id,
        document.title,
        document.service,
        document.opened_at.isoformat(),
        dict(document.labels),
        dict(document.terms),
        document.text,
        document.signals,
        [
            [a.command_id, a.action, a.target, a.runbook, a.outcome, a.undone]
            for a in document.actions
        ],
        document.closed_at.isoformat() if document.closed_at else None,
        document.closed_seq,
        document.resolution,
    ]


def _document(row: list[Any]) -> Document:
    (incident_id, title, service, opened_at, labels, terms, text, signals, actions, closed_at,
     closed_seq, resolution) = row  # fmt: skip
    counts = {str(k): int(v) for k, v in dict(terms).items()}
    return Document(
        incident_id=str(incident_id),
        title=str(title),
        service=service,
        opened_at=datetime.fromisoformat(opened_at),
        labels={str(k): str(v) for k, v in dict(labels).items()},
        terms=counts,
        length=sum(counts.values()),
        text=str(text),
        signals=int(signals),
        actions=[
            _Action(str(c), str(a), str(t), str(r), _outcome(o), bool(u))
            for c, a, t, r, o, u in actions
        ],
        closed_at=_time(closed_at),
        closed_seq=int(closed_seq),
        resolution=str(resolution),
    )


_OUTCOME_NAMES: dict[str, Outcome] = {name: name for name in get_args(Outcome)}


def _outcome(value: Any) -> Outcome:
    if value not in _OUTCOME_NAMES:
        raise ValueError(f"unknown outcome {value!r}")
    return _OUTCOME_NAMES[value]


# ---------------------------------------------------------------------------- from the log


def _cause_seq(event: Event) -> int | None:
    """Where the input that caused `event` sits: a decision's id is `<input id>:<n>` and the
    core places it n + 1 seqs after its input."""
    cause = event.causation_id
    if not cause or not event.id.startswith(cause + ":"):
        return None
    index = event.id[len(cause) + 1 :]
    return event.seq - int(index) - 1 if index.isdigit() else None


def document_from_log(log: EventLog, incident_id: str) -> Document | None:
    """An incident's document rebuilt from the log alone (its stream and the signals that
    opened or joined it, the first `SIGNALS_FOLDED`); None when the log has no such incident."""
    stream = list(log.read_stream(incident_id))
    if not stream or stream[0].type != "IncidentOpened":
        return None
    wanted = []
    for event in stream:
        if event.type == "IncidentOpened" or (
            event.type == "IncidentUpdated" and event.data.get("change") == "signal_added"
        ):
            seq = _cause_seq(event)
            if seq is not None:
                wanted.append(seq)
        if len(wanted) >= SIGNALS_FOLDED:
            break
    causes = {e.seq: e for e in log.read_seqs(wanted) if e.type == "SignalReceived"}
    fold = SimilarIncidents(keep=1)
    merged = sorted([*stream, *causes.values()], key=lambda event: event.seq)
    fold.feed_all(merged)
    return fold.documents.get(incident_id)


def prompt_finder(similar: SimilarIncidents) -> Callable[[str, int], list[dict[str, Any]]]:
    """What the advisor's consultant asks for an incident's similar past incidents: the matches
    as `for_prompt` gives them, none for an incident not (yet) known here."""

    def find(incident_id: str, limit: int) -> list[dict[str, Any]]:
        return for_prompt(similar.similar_if_known(incident_id, limit))

    return find


def log_finder(
    log: EventLog, keep: int = CLOSED_KEPT
) -> Callable[[str, int], list[dict[str, Any]]]:
    """`prompt_finder` over a log that grows as it is asked (a simulated run's): each question
    first folds the events appended since the last one."""
    similar = SimilarIncidents(keep)
    find = prompt_finder(similar)
    folded = [0]

    def find_in_log(incident_id: str, limit: int) -> list[dict[str, Any]]:
        for event in log.read(after=folded[0]):
            similar.feed(event)
            folded[0] = event.seq
        return find(incident_id, limit)

    return find_in_log
