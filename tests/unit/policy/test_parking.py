"""Parked-connection bookkeeping: per-listener keep-alive, oldest first, nothing lost."""

from sockact.policy.parking import Conn, ParkingLot


def conn(i: int, listener: int = 0) -> Conn:
    return Conn(id=i, fd=100 + i, listener=listener, family=0, peer=None)


def test_expiry_is_per_listener_and_oldest_first():
    lot = ParkingLot([10.0, 2.0])
    a, b, c = conn(1, 0), conn(2, 1), conn(3, 1)
    lot.park(a, now=0.0)
    lot.park(b, now=1.0)
    lot.park(c, now=5.0)
    assert len(lot) == 3
    assert list(lot.expired(now=3.5)) == [b]  # listener 1 keeps 2 s; c is younger
    assert list(lot.expired(now=7.5)) == [c]
    assert list(lot.expired(now=9.0)) == []
    assert list(lot.expired(now=10.0)) == [a]
    assert len(lot) == 0


def test_unpark_and_take_all():
    lot = ParkingLot([5.0])
    conns = [conn(i) for i in range(4)]
    for i, c in enumerate(conns):
        lot.park(c, now=float(i))
    lot.unpark(conns[1])
    assert len(lot) == 3
    assert set(lot) == {conns[0], conns[2], conns[3]}
    assert set(lot.take_all()) == {conns[0], conns[2], conns[3]}
    assert len(lot) == 0 and list(lot.expired(now=100.0)) == []


def test_a_reparked_connection_moves_to_the_young_end():
    lot = ParkingLot([5.0])
    a, b = conn(1), conn(2)
    lot.park(a, now=0.0)
    lot.park(b, now=1.0)
    lot.unpark(a)
    lot.park(a, now=4.0)  # served again, parked again
    lot.park(a, now=4.0)  # told twice: still one connection
    assert len(lot) == 2
    assert list(lot.expired(now=6.5)) == [b]
    assert len(lot) == 1


def test_keepalive_can_change_on_reload():
    lot = ParkingLot([75.0])
    lot.park(conn(1), now=0.0)
    lot.keepalive = [1.0]
    assert len(list(lot.expired(now=2.0))) == 1


def test_the_oldest_is_the_one_idle_longest_of_any_listener():
    lot = ParkingLot([10.0, 2.0])
    a, b, c = conn(1, 0), conn(2, 1), conn(3, 0)
    for parked, since in ((a, 3.0), (b, 1.0), (c, 5.0)):
        lot.park(parked, now=since)
    assert [lot.oldest() for _ in range(4)] == [b, a, c, None]
    assert len(lot) == 0
