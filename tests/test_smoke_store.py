"""A first end-to-end check of the store on both databases."""


def test_record_and_read_back(engine):
    recorded = engine.record({
        "type": "purchase", "customer_id": "c-1", "occurred_at": "2025-03-01T10:00:00Z",
        "order_id": "o-1", "amount": "59.90",
    })
    assert len(recorded.positions) == 2  # the implicit identification, then the purchase
    types = [e.TYPE for e in engine.events("c-1")]
    assert types == ["identified", "purchase"]
    assert all(e.actor == "tester" for e in engine.events("c-1"))
