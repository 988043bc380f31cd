"""The surface-neutral relay: reserve, call the upstream with failover, report events.

An API surface (silk.chat, and the next ones) gives it a Call already in the upstream's
chat-completions dialect; it yields events the surface encodes, and tells the Meter
(silk.metering.meter) what happened so that metering alone decides the bill.
"""
