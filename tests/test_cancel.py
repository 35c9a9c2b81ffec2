"""Cancellation tokens: subscriptions that end with their run."""

from __future__ import annotations

import threading

import pytest

import lazyflow as lf


def test_a_subscriber_is_called_once_when_the_token_is_cancelled():
    token = lf.CancelToken()
    called: list[str] = []
    token.on_cancel(lambda: called.append(token.reason))
    token.cancel("stop")
    token.cancel("again")
    assert called == ["stop"]


def test_an_unsubscribed_callback_is_not_called():
    token = lf.CancelToken()
    called: list[int] = []
    unsubscribe = token.on_cancel(lambda: called.append(1))
    unsubscribe()
    token.cancel()
    assert called == []


def test_subscribing_to_a_cancelled_token_calls_back_at_once():
    token = lf.CancelToken()
    token.cancel()
    called: list[int] = []
    token.on_cancel(lambda: called.append(1))()
    assert called == [1]


def test_runs_sharing_a_token_leave_no_subscription_behind(flow):
    token = lf.CancelToken()
    flow.node(lambda: 1, name="one")
    for _ in range(3):
        flow.cache.clear()
        flow.run("one", executor="threads", cancel=token)
    assert token._callbacks == {}  # a finished run's wake-up would hold its whole state


def test_cancelling_wakes_a_threads_run_while_its_node_still_runs(flow):
    started, proceed = threading.Event(), threading.Event()

    @flow.node
    def slow():
        started.set()
        proceed.wait(30)
        return 1

    handle = flow.submit("slow", executor="threads")
    try:
        assert started.wait(10)
        handle.cancel("enough")
        with pytest.raises(lf.CancelledError, match="enough"):
            handle.result(10)
        assert not proceed.is_set()  # woken by the cancel, not by the node finishing
    finally:
        proceed.set()


def test_subscribing_something_not_callable_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="needs a callable.*'stop'"):
        lf.CancelToken().on_cancel("stop")
