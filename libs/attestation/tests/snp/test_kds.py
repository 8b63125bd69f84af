"""The KDS client against a fake KDS on 127.0.0.1: paths, cache, offline mode, 429 handling."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest

from constellation.attestation import snp
from constellation.attestation.snp.kds import KdsClient, chain_path, vcek_path
from constellation.attestation.snp.verify import Verifier

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def kds(fakeamd, milan, turin):
    with fakeamd.FakeKds(milan, turin) as server:
        yield server


class Sleeper:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(kds, tmp_path, **kwargs) -> KdsClient:
    kwargs.setdefault("sleep", Sleeper())
    return KdsClient(cache_dir=tmp_path / "cache", base_url=kds.url, timeout=5, **kwargs)


def test_paths():
    tcb = snp.TcbVersion.from_parts(bootloader=2, tee=0, snp=6, microcode=93)
    chip = bytes(range(64))
    assert chain_path("milan") == "/vcek/v1/Milan/cert_chain"
    assert chain_path("Genoa", "vlek") == "/vlek/v1/Genoa/cert_chain"
    assert (
        vcek_path("Milan", chip, tcb)
        == f"/vcek/v1/Milan/{chip.hex()}?blSPL=2&teeSPL=0&snpSPL=6&ucodeSPL=93"
    )
    turin_tcb = snp.TcbVersion.from_parts(fmc=1, bootloader=2, tee=3, snp=4, microcode=5)
    assert vcek_path("Turin", chip, turin_tcb) == (
        f"/vcek/v1/Turin/{chip[:8].hex()}?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5"
    )
    with pytest.raises(ValueError, match="signer"):
        chain_path("Milan", "vxek")
    with pytest.raises(ValueError, match="unknown SEV-SNP product"):
        chain_path("Naples")


def test_fetch_and_cache(kds, tmp_path, milan):
    fetcher = client(kds, tmp_path)
    assert isinstance(fetcher, snp.KdsFetcher)
    assert fetcher.cert_chain("Milan") == milan.chain_pem()
    assert fetcher.vcek("Milan", milan.chip_id, milan.tcb) == milan.vcek
    assert fetcher.cert_chain("Milan") == milan.chain_pem()
    assert len(kds.requests) == 2  # the second chain came from the cache
    offline = KdsClient(cache_dir=tmp_path / "cache", base_url="http://127.0.0.1:9", offline=True)
    assert offline.vcek("Milan", milan.chip_id, milan.tcb) == milan.vcek
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_turin_vcek_is_fetched_by_short_hwid(kds, tmp_path, turin):
    assert client(kds, tmp_path).vcek("Turin", turin.chip_id, turin.tcb) == turin.vcek
    assert turin.chip_id[:8].hex() + "?fmcSPL=2&" in kds.requests[0]


def test_offline_miss(tmp_path, milan):
    offline = KdsClient(cache_dir=tmp_path, offline=True)
    with pytest.raises(snp.KdsOfflineError, match="not cached"):
        offline.cert_chain("Milan")


def test_not_found(kds, tmp_path):
    with pytest.raises(snp.KdsNotFoundError):
        client(kds, tmp_path).vcek("Milan", bytes(64), snp.TcbVersion(0))


def test_retry_after_is_honoured(kds, tmp_path, milan):
    kds.script.extend([(429, {"Retry-After": "2"}), (503, {})])
    sleeper = Sleeper()
    fetcher = client(kds, tmp_path, sleep=sleeper, backoff=0.5)
    assert fetcher.cert_chain("Milan", "vlek") == milan.chain_pem("vlek")
    assert sleeper.waits == [2.0, 1.0]
    assert len(kds.requests) == 3


def test_retry_after_http_date(kds, tmp_path, milan):
    when = (NOW + timedelta(seconds=5)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    kds.script.append((429, {"Retry-After": when}))
    sleeper = Sleeper()
    fetcher = client(kds, tmp_path, sleep=sleeper, now=lambda: NOW)
    fetcher.cert_chain("Milan")
    assert sleeper.waits == [5.0]


def test_rate_limit_is_bounded_in_attempts(kds, tmp_path):
    kds.script.extend([(429, {"Retry-After": "1"})] * 10)
    sleeper = Sleeper()
    with pytest.raises(snp.KdsRateLimitedError, match="3 attempts"):
        client(kds, tmp_path, sleep=sleeper, max_attempts=3).cert_chain("Milan")
    assert len(kds.requests) == 3
    assert sleeper.waits == [1.0, 1.0]


def test_rate_limit_is_bounded_in_time(kds, tmp_path):
    kds.script.append((429, {"Retry-After": "3600"}))
    sleeper = Sleeper()
    with pytest.raises(snp.KdsRateLimitedError, match="beyond the retry budget"):
        client(kds, tmp_path, sleep=sleeper).cert_chain("Milan")
    assert sleeper.waits == []


def test_other_errors_are_not_retried(kds, tmp_path):
    kds.script.append((403, {}))
    with pytest.raises(snp.KdsError, match="HTTP 403"):
        client(kds, tmp_path).cert_chain("Milan")
    assert len(kds.requests) == 1


def test_garbage_is_not_cached(kds, tmp_path):
    kds.documents[chain_path("Milan")] = b"<html>maintenance</html>"
    with pytest.raises(snp.KdsError, match="not a certificate"):
        client(kds, tmp_path).cert_chain("Milan")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unreachable_kds_is_bounded(tmp_path):
    sleeper = Sleeper()
    fetcher = KdsClient(base_url="http://127.0.0.1:9", timeout=1, max_attempts=2, sleep=sleeper)
    with pytest.raises(snp.KdsRateLimitedError, match="transport error"):
        fetcher.cert_chain("Milan")
    assert len(sleeper.waits) == 1


def test_verify_fetches_a_missing_chain(kds, tmp_path, milan):
    ev = milan.evidence()
    fetcher = client(kds, tmp_path)
    result = snp.verify_report(
        ev.report, ev.signer, None, roots=milan.roots(), at=NOW, fetcher=fetcher
    )
    assert result.product == "Milan"
    assert kds.requests == [chain_path("Milan")]
    vlek = milan.evidence("vlek")
    snp.verify(vlek.report, vlek.signer, None, roots=milan.roots(), at=NOW, fetcher=fetcher)
    assert kds.requests[-1] == chain_path("Milan", "vlek")


def test_fetched_chain_is_still_checked_against_pins(kds, tmp_path, milan, fakeamd):
    stranger = fakeamd.FakeAmd("Milan")
    kds.documents[chain_path("Milan")] = stranger.chain_pem()
    ev = milan.evidence()
    with pytest.raises(snp.VerificationError) as info:
        snp.verify(
            ev.report, ev.signer, None, roots=milan.roots(), at=NOW, fetcher=client(kds, tmp_path)
        )
    assert "snp.chain.pinned" in [f.check for f in info.value.failures]


@pytest.mark.parametrize(
    "value",
    [
        "Thu, 1 Jan 2026666666666666666666666666666666 00:00:05 GMT",  # fuzz finding (kds)
        "Thu, 1 Jan 99999 00:00:05 GMT",
        "\u00b9",  # fuzz finding (kds): "¹".isdigit() is true, float() refuses it
        "-5",
        "1e400",
        "",
    ],
)
def test_hostile_retry_after_is_bounded_and_typed(kds, tmp_path, milan, value):
    """Fuzz findings (kds): an HTTP-date with a huge year raised ``OverflowError``, a
    superscript digit ``ValueError``; either is now "no usable hint" (plain backoff)."""
    kds.script.append((429, {"Retry-After": value}))
    sleeper = Sleeper()
    with contextlib.suppress(snp.KdsRateLimitedError):
        assert client(kds, tmp_path, sleep=sleeper, now=lambda: NOW).cert_chain("Milan") == (
            milan.chain_pem()
        )
    assert all(0 <= wait <= 30 for wait in sleeper.waits)


# -- AMD KDS unreachable, with a warm and a cold cache (issue 14 fault tests) ------------------


def _down_kds_url(fakeamd, milan) -> str:
    """The URL of a fake KDS that served once and is now shut down (connections refused)."""
    with fakeamd.FakeKds(milan) as kds:
        return kds.url


def test_warm_cache_verifies_while_kds_is_down(fakeamd, milan, tmp_path):
    ev = milan.evidence()
    with fakeamd.FakeKds(milan) as kds:
        url = kds.url
        client(kds, tmp_path).cert_chain("Milan")  # an earlier verification warmed the cache
    sleeper = Sleeper()
    fetcher = KdsClient(
        cache_dir=tmp_path / "cache", base_url=url, timeout=1, max_attempts=2, sleep=sleeper
    )
    verifier = Verifier(milan.roots())
    result = verifier.verify_report(ev.report, ev.signer, None, at=NOW, fetcher=fetcher)
    assert result.product == "Milan"
    assert sleeper.waits == []  # nothing was even attempted over the network


def test_cold_cache_with_kds_down_is_a_bounded_typed_error(fakeamd, milan, tmp_path):
    ev = milan.evidence()
    sleeper = Sleeper()
    fetcher = KdsClient(
        cache_dir=tmp_path / "cache",
        base_url=_down_kds_url(fakeamd, milan),
        timeout=1,
        max_attempts=3,
        sleep=sleeper,
    )
    started = time.monotonic()
    with pytest.raises(snp.KdsRateLimitedError, match=r"in 3 attempts.*transport error"):
        Verifier(milan.roots()).verify_report(ev.report, ev.signer, None, at=NOW, fetcher=fetcher)
    assert time.monotonic() - started < 5
    assert sleeper.waits == [1.0, 2.0]  # backoff between the three attempts, then give up
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_kds_answering_500_is_a_bounded_typed_error(kds, tmp_path):
    kds.script.extend([(500, {})] * 10)
    sleeper = Sleeper()
    with pytest.raises(snp.KdsRateLimitedError, match="HTTP 500"):
        client(kds, tmp_path, sleep=sleeper, max_attempts=3).cert_chain("Milan")
    assert len(kds.requests) == 3
    assert len(sleeper.waits) == 2


def test_kds_answering_429_beyond_the_deadline_is_a_typed_error(kds, tmp_path):
    kds.script.extend([(429, {"Retry-After": "20"})] * 10)
    sleeper = Sleeper()
    clock = iter(range(0, 1000, 20))
    with pytest.raises(snp.KdsRateLimitedError, match="beyond the retry budget"):
        client(
            kds, tmp_path, sleep=sleeper, deadline=50, monotonic=lambda: float(next(clock))
        ).cert_chain("Milan")
    assert sum(sleeper.waits) <= 50
