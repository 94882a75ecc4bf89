"""A seeded generator of realistic customer histories, as import records (DOMAIN.md §2).

The demo, the tests and the import benchmark all need data that looks like a real feed:
people who are only ever prospects, one-time and repeat buyers, clients with a manager and
benefits who bring in friends, customers who leave and some who come back; refunds after
purchases, resolutions after complaints, follow-ups after sales. Real feeds also arrive out
of order, so a share of records is *backfilled*: it comes later in the stream than records
of the same customer that occur after it (never before the record it depends on, so a
refund still follows its purchase).

Records stream out block by block (``BLOCK`` customers at a time, in load order within the
block), so a million events never sit in memory at once. The same arguments always give
the same records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

REFERENCE = datetime(2025, 6, 30, tzinfo=UTC)
BLOCK = 1000
MEAN_EVENTS = 10
BACKFILL_SHARE = 0.08
REFERRED_SHARE = 0.6  # of referrals, those whose friend becomes a customer of the sample

# fmt: off
CATEGORIES = {  # name: (lowest, highest) price
    "books": (8, 60), "electronics": (40, 900), "home": (15, 300), "garden": (10, 250),
    "toys": (10, 120), "sports": (20, 400), "beauty": (6, 90), "food": (5, 80),
}
CONTACTS = [  # (channel, direction, purpose, weight)
    ("email", "inbound", "inquiry", 4), ("phone", "inbound", "inquiry", 3),
    ("chat", "inbound", "inquiry", 3), ("social", "inbound", "inquiry", 1),
    ("visit", "inbound", "inquiry", 1), ("phone", "inbound", "support", 3),
    ("chat", "inbound", "support", 3), ("email", "inbound", "support", 2),
    ("letter", "inbound", "other", 0.5), ("other", "inbound", "other", 0.5),
    ("email", "outbound", "offer", 5), ("letter", "outbound", "offer", 1),
    ("social", "outbound", "offer", 1), ("phone", "outbound", "other", 0.5),
    ("meeting", "outbound", "meeting", 0.7), ("visit", "inbound", "meeting", 0.3),
]
FOLLOW_UPS = [
    ("phone", "outbound", "follow_up"), ("email", "outbound", "follow_up"),
    ("email", "outbound", "feedback_request"), ("phone", "outbound", "feedback_request"),
]
CONTACT_COST = {
    "email": "0.05", "phone": "2.50", "chat": "0.80", "social": "0.10", "visit": "35.00",
    "meeting": "60.00", "letter": "1.20", "other": "1.00",
}
SOURCES = ["web", "store", "trade_fair", "partner", "ad_campaign", "cold_call"]
DISQUALIFY = ["no budget", "outside our area", "buys only from a competitor", "no need"]
LEAVE = ["moved to a competitor", "price", "moved away", "no longer needed", None]
MANAGERS = ["a.kowalska", "i.petrov", "l.wei", "m.nowak", "o.smirnova"]
BENEFITS = {
    "financial": ["loyalty discount 5%", "free shipping for a year", None],
    "social": ["birthday greeting", "invitation to the client evening", None],
    "structural": ["order portal access", "consignment stock on site", None],
}
FIRST = ["Anna", "Piotr", "Olga", "Ivan", "Li", "Mei", "Jan", "Ewa", "Dmitri", "Wang", "Sara"]
LAST = ["Nowak", "Kowalski", "Ivanova", "Smirnov", "Zhang", "Chen", "Wójcik", "Petrova"]
OFFSETS = [timezone(timedelta(hours=h)) for h in (1, 2, 3, 8, -5)]

SHORT = ("follow_up", "refund", "complaint_resolved")  # happen days, not months, later
WEIGHTS = {  # how often each persona does what, while it is possible
    "prospect": {"contact": 6, "qualified": 2, "disqualified": 2, "feedback": 0.5},
    "buyer": {
        "purchase": 6, "contact": 5, "complaint": 1, "complaint_resolved": 6, "refund": 1,
        "feedback": 1.5, "referral": 0.4, "benefit_granted": 0.4, "qualified": 0.3,
    },
    "client": {
        "purchase": 7, "contact": 5, "complaint": 0.8, "complaint_resolved": 6, "refund": 0.8,
        "feedback": 1.5, "referral": 1.2, "benefit_granted": 1.2, "manager_assigned": 2,
    },
}
# fmt: on


def sample(
    customers: int = 300,
    *,
    events: int | None = None,
    seed: int = 0,
    reference: datetime = REFERENCE,
    years: float = 3.0,
    backfill_share: float = BACKFILL_SHARE,
) -> Iterator[dict[str, Any]]:
    """Input records for ``customers`` histories spread over ``years`` before ``reference``.

    With ``events`` the sample has exactly that many records (at least one per customer);
    without, about ``MEAN_EVENTS`` per customer. Referrals to friends who never appear
    otherwise make the engine identify a few more customers than ``customers``.
    """
    if customers < 1 or (events is not None and events < customers):
        raise ValueError("need at least one customer and at least one event per customer")
    rng = random.Random(seed)
    budgets = _budgets(rng, customers, events)
    span = timedelta(days=365.25 * years)
    for first in range(1, customers + 1, BLOCK):
        numbers = range(first, min(first + BLOCK, customers + 1))
        block = [(number, next(budgets)) for number in numbers]
        yield from _block(rng, block, reference, span, backfill_share)


def _budgets(rng: random.Random, customers: int, events: int | None) -> Iterator[int]:
    """Events per customer: skewed like real data (many short histories, a few long)."""
    left = events or 0
    for remaining in range(customers, 0, -1):
        if events is None:
            yield _draw(rng, MEAN_EVENTS)
        elif remaining == 1:
            yield left
        else:
            budget = min(_draw(rng, left / remaining), left - (remaining - 1))
            left -= budget
            yield budget


def _draw(rng: random.Random, mean: float) -> int:
    return 1 if mean <= 1 else 1 + int(rng.expovariate(1 / (mean - 1)))


def _block(
    rng: random.Random,
    block: list[tuple[int, int]],
    reference: datetime,
    span: timedelta,
    backfill_share: float,
) -> Iterator[dict[str, Any]]:
    """One block of histories in load order. Referrals made by earlier histories of the
    block are taken up by later customers; those left over refer friends outside it."""
    feed = Feed(rng, backfill_share)
    waiting: list[dict[str, Any]] = []
    for number, budget in block:
        referral = _take_referral(rng, waiting, reference)
        start = _start(rng, reference, span, referral)
        life = Life(rng, feed, number, budget, start, reference, referral)
        life.live()
        waiting += life.referrals
    for k, record in enumerate(waiting):
        record["referred_customer_id"] = f"{record['customer_id']}-w{k}"
    yield from feed.drain()


def _take_referral(
    rng: random.Random, waiting: list[dict[str, Any]], reference: datetime
) -> dict[str, Any] | None:
    if waiting and rng.random() < 0.8:
        referral = waiting.pop(0)
        if referral["at"] < reference - timedelta(days=3):
            return referral
        waiting.append(referral)
    return None


def _start(
    rng: random.Random, reference: datetime, span: timedelta, referral: dict | None
) -> datetime:
    if referral is not None:
        room = (reference - referral["at"]).total_seconds()
        return referral["at"] + timedelta(seconds=rng.uniform(0.01, 0.5) * room)
    latest = span - timedelta(days=14)
    return reference - span + timedelta(seconds=rng.uniform(0, latest.total_seconds()))


class Feed:
    """A block's records in load order: by occurred_at, except backfilled ones, which
    arrive weeks to a year late, yet never before the record they depend on."""

    def __init__(self, rng: random.Random, backfill_share: float):
        self.rng = rng
        self.share = backfill_share
        self.items: list[tuple[datetime, int, dict[str, Any]]] = []

    def add(self, record: dict[str, Any], moment: datetime, after: datetime | None) -> datetime:
        """Queue a record; returns its place in load order (for records that depend on it)."""
        key = moment
        if self.rng.random() < self.share:
            key += timedelta(days=self.rng.uniform(20, 400))
        if after is not None and key <= after:
            key = after + timedelta(microseconds=1)
        self.items.append((key, len(self.items), record))
        return key

    def drain(self) -> Iterator[dict[str, Any]]:
        self.items.sort(key=lambda item: item[:2])
        for _, _, record in self.items:
            record.pop("at", None)
            yield record


class Life:
    """One customer's history, event by event, until its budget of events is spent."""

    def __init__(
        self,
        rng: random.Random,
        feed: Feed,
        number: int,
        budget: int,
        start: datetime,
        end: datetime,
        referral: dict[str, Any] | None,
    ):
        self.rng, self.feed, self.number = rng, feed, number
        self.id = f"c-{number:06d}"
        self.budget, self.t, self.end = budget, start, end
        self.invitation = referral
        self.persona = self._persona()
        self.comes_back = rng.random() < 0.4
        self.orders: list[tuple[str, Decimal, datetime]] = []  # refundable: id, amount, key
        self.complaints: list[tuple[str, datetime]] = []  # open: id, key
        self.referrals: list[dict[str, Any]] = []
        self.purchases = 0
        self.gone = self.managed = False
        self.then: list[str] = []  # what happens next, e.g. a follow-up after a sale

    def _persona(self) -> str:
        pick = self.rng.random()
        if self.budget <= 3:
            return "prospect" if pick < 0.4 else "buyer"
        if self.budget >= 8 and pick < 0.45:
            return "client"
        return "prospect" if pick < 0.12 else ("churner" if pick > 0.8 else "buyer")

    def live(self) -> None:
        skips_identification = self.invitation is None and self.rng.random() < 0.05
        if not skips_identification:
            self._emit(self.identified(), gap=False)
        while self.budget:
            kind = self.then.pop(0) if self.then else self._choose()
            self._emit(getattr(self, kind)(), gap=True, short=kind in SHORT)

    def _choose(self) -> str:
        weights = dict(WEIGHTS["buyer" if self.persona == "churner" else self.persona])
        if self.persona == "churner" and self.purchases and not self.gone:
            weights["left"] = 1.5
        if self.gone and not self.comes_back:
            weights = {"win_back": 1}  # offers that go unanswered
        if not self.orders:
            weights.pop("refund", None)
        if not self.complaints:
            weights.pop("complaint_resolved", None)
        if self.managed:
            weights.pop("manager_assigned", None)
        if not self.purchases and "purchase" in weights:
            weights["contact"] = weights["qualified"] = 3
        kinds = list(weights)
        return self.rng.choices(kinds, [weights[k] for k in kinds])[0]

    def _emit(self, record: dict[str, Any], *, gap: bool, short: bool = False) -> None:
        if gap:
            self._advance(short)
        after = record.pop("after", None)
        stamp = self.t if self.rng.random() < 0.85 else self.t.astimezone(self.rng.choice(OFFSETS))
        occurred = stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
        full = {"type": record.pop("type"), "customer_id": self.id, "occurred_at": occurred}
        full.update(record)
        key = self.feed.add(full, self.t, after)
        self.budget -= 1
        if full["type"] == "purchase":
            self.orders.append((full["order_id"], Decimal(full["amount"]), key))
        elif full["type"] == "complaint":
            self.complaints.append((full["complaint_id"], key))
        elif full["type"] == "referral" and full["referred_customer_id"] is None:
            full["at"] = self.t
            self.referrals.append(full)

    def _advance(self, short: bool) -> None:
        """Move time on, leaving room before ``end`` for every event still to come."""
        fair = (self.end - self.t).total_seconds() / (self.budget + 1)
        if short:
            seconds = self.rng.uniform(2 * 3600, 10 * 86400)
        else:
            seconds = self.rng.expovariate(1) * fair
        self.t += timedelta(seconds=max(min(60.0, fair), min(seconds, 1.5 * fair)))

    # One method per kind of event: each returns the record's type and fields.

    def identified(self) -> dict[str, Any]:
        rng = self.rng
        record: dict[str, Any] = {"type": "identified", "source": rng.choice(SOURCES)}
        if self.invitation is not None:
            record["source"] = "referral"
            record["referred_by"] = self.invitation["customer_id"]
            self.invitation["referred_customer_id"] = self.id
        if rng.random() < 0.5:
            record["acquisition_cost"] = f"{rng.uniform(2, 80):.2f}"
        if rng.random() < 0.8:
            record["personal"] = self._personal()
        return record

    def _personal(self) -> dict[str, str]:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        email = f"{first.lower()}.{self.number}@example.com"
        personal = {"name": f"{first} {last}", "email": email}
        if self.rng.random() < 0.5:
            personal["phone"] = f"+48 {self.rng.randint(500_000_000, 899_999_999)}"
        if self.rng.random() < 0.2:
            personal["address"] = f"{self.rng.randint(1, 200)} Main Street"
        return personal

    def qualified(self) -> dict[str, Any]:
        note = self.rng.choice([None, "budget confirmed", "asked for a quote"])
        return {"type": "qualified", **({"note": note} if note else {})}

    def disqualified(self) -> dict[str, Any]:
        return {"type": "disqualified", "reason": self.rng.choice(DISQUALIFY)}

    def contact(self, scenario: tuple[str, str, str] | None = None) -> dict[str, Any]:
        rng = self.rng
        if scenario is None:
            *scenario, _ = rng.choices(CONTACTS, [c[3] for c in CONTACTS])[0]
        channel, direction, purpose = scenario
        record = {"type": "contact", "channel": channel, "direction": direction, "purpose": purpose}
        if rng.random() < 0.7:
            record["cost"] = CONTACT_COST[channel]
        if rng.random() < 0.3:
            record["event_id"] = f"crm-{self.number}-{self.budget}"
        if rng.random() < 0.05:
            record["personal"] = {"note": "prefers calls after 5 pm"}
        return record

    def follow_up(self) -> dict[str, Any]:
        return self.contact(self.rng.choice(FOLLOW_UPS))

    def win_back(self) -> dict[str, Any]:
        return self.contact((self.rng.choice(["email", "letter", "phone"]), "outbound", "offer"))

    def purchase(self) -> dict[str, Any]:
        rng = self.rng
        self.purchases += 1
        category = rng.choice(list(CATEGORIES))
        amount = Decimal(f"{rng.uniform(*CATEGORIES[category]):.2f}")
        record = {
            "type": "purchase",
            "order_id": f"o-{self.number}-{self.purchases}",
            "amount": str(amount),
            "category": category,
        }
        if rng.random() < 0.6:
            record["margin"] = str(
                (amount * Decimal(f"{rng.uniform(0.1, 0.5):.2f}")).quantize(Decimal("0.01"))
            )
        if rng.random() < 0.4:
            self.then.append("follow_up")
        if self.gone:
            self.gone = False  # a customer who left has come back
        return record

    def refund(self) -> dict[str, Any]:
        order_id, amount, key = self.orders.pop(self.rng.randrange(len(self.orders)))
        if self.rng.random() > 0.4:
            amount = max(
                Decimal("0.01"),
                (amount * Decimal(f"{self.rng.uniform(0.1, 0.7):.2f}")).quantize(Decimal("0.01")),
            )
        return {"type": "refund", "order_id": order_id, "amount": str(amount), "after": key}

    def complaint(self) -> dict[str, Any]:
        complaint_id = f"k-{self.number}-{self.budget}"
        if self.rng.random() < 0.6:
            self.then.append("complaint_resolved")
        return {
            "type": "complaint",
            "complaint_id": complaint_id,
            "topic": self.rng.choice(["product", "terms", "service", "after_sales"]),
            "severity": self.rng.choice(["low", "medium", "medium", "high"]),
        }

    def complaint_resolved(self) -> dict[str, Any]:
        complaint_id, key = self.complaints.pop(0)
        record = {
            "type": "complaint_resolved",
            "complaint_id": complaint_id,
            "satisfied": self.rng.random() < 0.7,
            "after": key,
        }
        if self.rng.random() < 0.5:
            record["cost"] = f"{self.rng.uniform(5, 150):.2f}"
        return record

    def referral(self) -> dict[str, Any]:
        """A friend who will be a customer of the sample (named when one takes it up), or
        someone known only through this referral."""
        if self.rng.random() < REFERRED_SHARE:
            return {"type": "referral", "referred_customer_id": None}
        return {"type": "referral", "referred_customer_id": f"{self.id}-f{self.budget}"}

    def feedback(self) -> dict[str, Any]:
        happy = {"prospect": 6, "buyer": 7, "client": 9, "churner": 5}[self.persona]
        score = min(10, max(0, round(self.rng.gauss(happy, 2))))
        return {"type": "feedback", "score": score}

    def manager_assigned(self) -> dict[str, Any]:
        self.managed = True
        return {"type": "manager_assigned", "manager": self.rng.choice(MANAGERS)}

    def benefit_granted(self) -> dict[str, Any]:
        kind = self.rng.choice(list(BENEFITS))
        description = self.rng.choice(BENEFITS[kind])
        return {
            "type": "benefit_granted",
            "kind": kind,
            **({"description": description} if description else {}),
        }

    def left(self) -> dict[str, Any]:
        self.gone = True
        reason = self.rng.choice(LEAVE)
        return {"type": "left", **({"reason": reason} if reason else {})}
