"""The supervisor's decisions, as pure objects: no sockets, no processes, no clock.

states.py holds the state machines with their transition tables; pool.py decides which workers to
start, retire or kill; dispatch.py which worker gets a connection; parking.py when a parked
connection expires. The supervisor feeds them events and carries out what they return.
"""
