"""The database goes away mid-traffic and comes back: callers see UNAVAILABLE
(never INTERNAL), health flips to NOT_SERVING and back, and traffic succeeds
again without restarting the service."""

import threading
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_user, backend_url, register, running_server, server_settings, wait_until
from tests.tcp_proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(client) -> int:
    stub = health_pb2_grpc.HealthStub(client.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="feedback.v1.FeedbackService")).status


def wait_for_health(client, status: int, timeout_s: float = 15) -> None:
    wait_until(lambda: health_of(client) == status, timeout_s)


def upsert_status(client, rating: int) -> grpc.StatusCode:
    request = pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=rating)
    try:
        client.feedback.UpsertFeedback(request, metadata=as_user("alice"), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


class BackgroundTraffic:
    """Callers that keep upserting while the database comes and goes."""

    def __init__(self, client, callers: int = 4) -> None:
        self.statuses: Counter = Counter()
        self._stop = threading.Event()
        self.callers = callers
        self._threads = [threading.Thread(target=self._run, args=(client,)) for _ in range(callers)]

    def _run(self, client) -> None:
        while not self._stop.is_set():
            self.statuses[upsert_status(client, 1)] += 1
            # Pacing, not waiting: a steady trickle of calls, which leaves the
            # two shared cores to the server and to the test's own calls.
            time.sleep(0.005)

    def __enter__(self) -> "BackgroundTraffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_database_outage_is_unavailable_and_heals(backend, tmp_path):
    url = backend_url(backend, tmp_path)
    proxy = TcpProxy.for_url(url).start()
    settings = server_settings(tmp_path, database_url=proxy.url_through(url), health_interval_s=0.2)
    statuses: Counter = Counter()
    try:
        with running_server(settings) as (_, client):
            register(client, "t1", "alice", ["r1"])
            for rating in (1, -1) * 5:
                statuses[upsert_status(client, rating)] += 1
            assert statuses == {grpc.StatusCode.OK: 10}
            assert health_of(client) == SERVING

            traffic = BackgroundTraffic(client).__enter__()
            wait_until(lambda: traffic.statuses[grpc.StatusCode.OK] >= 8)  # the callers are under way
            proxy.cut()
            down = Counter(upsert_status(client, 1) for _ in range(20))
            wait_for_health(client, NOT_SERVING)
            down.update(upsert_status(client, 1) for _ in range(20))
            assert set(down) == {grpc.StatusCode.UNAVAILABLE}, down
            statuses.update(down)

            proxy.start()
            wait_for_health(client, SERVING)
            # Background calls succeed again: more than the callers' calls
            # that were already on their way when it healed.
            healed = traffic.statuses[grpc.StatusCode.OK]
            wait_until(lambda: traffic.statuses[grpc.StatusCode.OK] > healed + traffic.callers)
            traffic.__exit__()
            up = Counter(upsert_status(client, rating) for rating in (1, -1) * 10)
            assert up == {grpc.StatusCode.OK: 20}
            statuses.update(up)
            # Mid-traffic, every caller got an answer, and only OK or UNAVAILABLE.
            assert set(traffic.statuses) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
            statuses.update(traffic.statuses)
            stats = client.feedback.GetFeedbackStats(
                pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"), metadata=as_user("alice")
            )
            assert (stats.total, stats.negative) == (1, 1)  # the last upsert, once
    finally:
        proxy.cut()
    print(f"\n[outage {backend}] statuses seen: {dict((code.name, n) for code, n in statuses.items())}")
