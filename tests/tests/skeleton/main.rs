//! Scenario tests of the walking skeleton (issue 3): `tether run`'s services in-process on free
//! ports, driven by real MQTT clients and HTTP.

mod api;
mod connect;
mod presence;
mod uplink;
