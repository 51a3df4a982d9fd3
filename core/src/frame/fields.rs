//! The wire order of every message's fields: the one place that defines
//! it. A field is only ever added at the end of its record; one added after
//! version 1 is read only when the record holds more bytes, and takes its
//! default otherwise.

use super::record::{Reader, Record, Writer};
use super::{
    Deny, FrameError, GatewayReport, GoAway, Hello, Open, RelayRoute, ServiceAd, Status,
    StatusCode, Telemetry, TunnelReport, Update, VersionRange,
};

impl Record for Hello {
    fn put(&self, w: &mut Writer) {
        w.varint(self.versions.min.into());
        w.varint(self.versions.max.into());
        w.str(&self.name);
        w.str(&self.region);
        w.records(&self.services);
        w.strings(&self.capabilities);
        w.str(&self.instance);
        w.str(&self.advertise);
        w.varint(self.lane.into());
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Hello {
            versions: VersionRange::new(r.u16("min_version")?, r.u16("max_version")?),
            name: r.string("name")?,
            region: r.string("region")?,
            services: r.records("services", "SERVICE")?,
            capabilities: r.strings("capabilities")?,
            instance: r.later_string("instance")?,
            advertise: r.later_string("advertise")?,
            lane: r.later_u16("lane")?,
        })
    }
}

impl Record for ServiceAd {
    fn put(&self, w: &mut Writer) {
        w.str(&self.name);
        w.bool(self.healthy);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ServiceAd {
            name: r.string("name")?,
            healthy: r.bool("healthy")?,
        })
    }
}

impl Record for Update {
    fn put(&self, w: &mut Writer) {
        w.records(&self.services);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Update {
            services: r.records("services", "SERVICE")?,
        })
    }
}

impl Record for GoAway {
    fn put(&self, w: &mut Writer) {
        w.str(&self.reason);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(GoAway {
            reason: r.string("reason")?,
        })
    }
}

impl Record for Deny {
    fn put(&self, w: &mut Writer) {
        w.str(&self.signed_list);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Deny {
            signed_list: r.string("signed_list")?,
        })
    }
}

impl Record for Open {
    fn put(&self, w: &mut Writer) {
        w.str(&self.service);
        w.array(&self.trace_id);
        w.array(&self.span_id);
        w.opt_str(self.origin.as_deref());
        w.str(&self.relay_to);
        w.str(&self.relayed_by);
        w.str(&self.origin_gateway);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Open {
            service: r.string("service")?,
            trace_id: r.array("trace_id")?,
            span_id: r.array("span_id")?,
            origin: r.opt_string("origin")?,
            relay_to: r.later_string("relay_to")?,
            relayed_by: r.later_string("relayed_by")?,
            origin_gateway: r.later_string("origin_gateway")?,
        })
    }
}

/// A status code's number on the wire. A code is sent only to a peer
/// whose negotiated version knows it, so an unknown number is malformed.
fn status_number(code: StatusCode) -> u64 {
    match code {
        StatusCode::Ok => 0,
        StatusCode::NoSuchService => 1,
        StatusCode::Forbidden => 2,
        StatusCode::TargetUnreachable => 3,
        StatusCode::Overloaded => 4,
        StatusCode::Draining => 5,
    }
}

impl Record for Status {
    fn put(&self, w: &mut Writer) {
        w.varint(status_number(self.code));
        w.str(&self.message);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let code = match r.varint("code")? {
            0 => StatusCode::Ok,
            1 => StatusCode::NoSuchService,
            2 => StatusCode::Forbidden,
            3 => StatusCode::TargetUnreachable,
            4 => StatusCode::Overloaded,
            5 => StatusCode::Draining,
            n => {
                return Err(FrameError::Malformed(format!(
                    "STATUS.code: {n} is not a status this version knows"
                )));
            }
        };
        Ok(Status {
            code,
            message: r.string("message")?,
        })
    }
}

impl Record for Telemetry {
    fn put(&self, w: &mut Writer) {
        w.record(&self.origin);
        w.records(&self.relayed);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Telemetry {
            origin: r.record("origin", "REPORT")?,
            relayed: r.records("relayed", "REPORT")?,
        })
    }
}

impl Record for GatewayReport {
    fn put(&self, w: &mut Writer) {
        w.str(&self.gateway);
        w.str(&self.region);
        w.varint(self.boot_id);
        w.varint(self.age_ms);
        w.records(&self.tunnels);
        w.records(&self.services);
        w.varint(self.streams_total);
        w.varint(self.streams_failed);
        w.str(&self.instance);
        w.str(&self.advertise);
        w.records(&self.relayable);
        w.varint(self.seq);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(GatewayReport {
            gateway: r.string("gateway")?,
            region: r.string("region")?,
            boot_id: r.varint("boot_id")?,
            age_ms: r.varint("age_ms")?,
            tunnels: r.records("tunnels", "TUNNEL")?,
            services: r.records("services", "SERVICE")?,
            streams_total: r.varint("streams_total")?,
            streams_failed: r.varint("streams_failed")?,
            instance: r.later_string("instance")?,
            advertise: r.later_string("advertise")?,
            relayable: if r.remaining() == 0 {
                Vec::new()
            } else {
                r.records("relayable", "RELAY")?
            },
            seq: r.later_varint("seq")?,
        })
    }
}

impl Record for RelayRoute {
    fn put(&self, w: &mut Writer) {
        w.str(&self.service);
        w.str(&self.region);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(RelayRoute {
            service: r.string("service")?,
            region: r.string("region")?,
        })
    }
}

impl Record for TunnelReport {
    fn put(&self, w: &mut Writer) {
        w.str(&self.peer);
        w.str(&self.peer_region);
        w.str(&self.state);
        w.varint(self.rtt_us);
        w.varint(self.loss_permille.into());
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(TunnelReport {
            peer: r.string("peer")?,
            peer_region: r.string("peer_region")?,
            state: r.string("state")?,
            rtt_us: r.varint("rtt_us")?,
            loss_permille: r.u16("loss_permille")?,
        })
    }
}
