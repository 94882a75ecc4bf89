"""Stored events are versioned: a contact stored before `cost` existed (class version 1)
is read back as version 2 with ``cost`` None (issue 2: "an upcasting path exists and is
tested with a stored old version")."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from eventsourcing.persistence import StoredEvent
from support import at, ev, purchase, stream, when

from journey.events import Contacted

TOPIC = "journey.events:Contacted"


def store_v1_contact(engine, customer_id: str, version: int) -> None:
    """Write a contact as version 1 wrote it: no ``cost``, no ``class_version``."""
    state = {
        "timestamp": datetime(2024, 6, 1, 9, 30, tzinfo=UTC),
        "occurred_at": when(at(2)),
        "actor": "legacy-loader",
        "event_id": None,
        "channel": "phone",
        "direction": "inbound",
        "purpose": "support",
        "personal": {"name": "Ann"},
    }
    app = engine.app
    app.recorder.insert_events(
        [StoredEvent(customer_id, version, TOPIC, app.mapper.transcoder.encode(state))]
    )


def test_contacted_is_at_class_version_2():
    assert Contacted.class_version == 2
    state = {"channel": "email"}
    Contacted.upcast_v1_v2(state)
    assert state == {"channel": "email", "cost": None}


def test_a_stored_v1_contact_reads_back_with_no_cost(engine):
    engine.record(ev("identified", "c-1", at(1), source="fair"))
    store_v1_contact(engine, "c-1", 2)
    stored = engine.events("c-1")
    assert [type(e).__name__ for e in stored] == ["Identified", "Contacted"]
    contact = stored[1]
    assert contact.payload() == {
        "channel": "phone",
        "direction": "inbound",
        "purpose": "support",
        "cost": None,
        "personal": {"name": "Ann"},
    }
    assert contact.occurred_at == when(at(2))
    assert contact.recorded_at == datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    assert contact.actor == "legacy-loader"


def test_a_customer_with_a_v1_contact_can_be_written_to(engine):
    engine.record(ev("identified", "c-1", at(1)))
    store_v1_contact(engine, "c-1", 2)
    v1 = dict(channel="phone", direction="inbound", purpose="support",
              personal={"name": "Ann"})
    # the same contact sent again is recognised as a retry of the upcast one
    assert engine.record(ev("contact", "c-1", at(2), **v1)).duplicate is True
    engine.record(purchase("c-1", "o-1", day=3))
    assert [(v, t) for v, t, _ in stream(engine, "c-1")] == [
        (1, "identified"), (2, "contact"), (3, "purchase")
    ]


def test_new_contacts_are_stored_at_version_2(engine):
    engine.record(ev("contact", "c-1", channel="chat", direction="outbound", purpose="offer",
                     cost="0.10"))
    notifications = engine.app.select_notifications(0, 10)
    contact = next(n for n in notifications if n.topic == TOPIC)
    state = json.loads(contact.state)
    assert state["class_version"] == 2
    assert state["cost"] == {"_type_": "decimal_str", "_data_": "0.10"}
