"""The service's rules as pure functions: Host names, the served set, and the per-client pitch budget."""

from __future__ import annotations

import pytest

from liveroom.serve.guard import PitchBudget, Refused, Rules, host_name, is_loopback, served_names


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:8080", "127.0.0.1"), ("[::1]:8080", "::1"), ("LocalHost", "localhost"),
    ("forecast.example.org.:443", "forecast.example.org"), ("::1", "::1"), ("", ""),
])
def test_host_name_drops_the_port(header, name):
    assert host_name(header) == name


def test_the_served_names_are_this_machine_the_bound_address_and_the_allowed():
    assert served_names("0.0.0.0", []) == {"localhost", "127.0.0.1", "::1"}
    assert "10.0.0.5" in served_names("10.0.0.5", [])
    assert "forecast.example.org" in served_names("127.0.0.1", ["Forecast.Example.org"])
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("myhost")


def test_rules_refuse_in_order_host_origin_type_token():
    rules = Rules(served_names("127.0.0.1", []), token="t0k")
    ok = {"host": "127.0.0.1:8080", "content-type": "application/json", "authorization": "Bearer t0k"}
    rules.check("POST", "/v1/forecast", ok)
    for change, status in (({"host": "evil.example"}, 421), ({"origin": "http://evil.example"}, 403),
                           ({"content-type": "text/plain"}, 415), ({"authorization": "Bearer no"}, 401)):
        with pytest.raises(Refused) as e:
            rules.check("POST", "/v1/forecast", {**ok, **change})
        assert e.value.status == status, change
    rules.check("GET", "/v1/model", {**ok, "origin": "http://127.0.0.1:8080"})  # the page's own origin
    rules.check("GET", "/page/app.js", {"host": "localhost"})                  # the page needs no token


def test_the_budget_counts_new_pitches_in_a_sliding_minute():
    budget = PitchBudget(3)
    budget.take("a", 2, now=0.0)
    budget.take("b", 3, now=1.0)           # another client has its own
    budget.take("a", 0, now=2.0)           # cached pitches are free
    with pytest.raises(Refused) as e:
        budget.take("a", 2, now=10.0)      # 2 + 2 > 3: waits until the first two leave the window
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "50"
    budget.take("a", 1, now=10.0)
    budget.take("a", 3, now=70.0)
    with pytest.raises(Refused) as e:
        budget.take("a", 4, now=200.0)     # more than the limit at once: a whole minute
    assert e.value.headers["Retry-After"] == "60"
    PitchBudget(0).take("a", 1000, now=0.0)  # 0: no limit
