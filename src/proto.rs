//! The generated protobuf types and services (see `build.rs`), laid out by protobuf package.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Encoded `FileDescriptorSet` of every proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// `google.protobuf.Timestamp`, with the proto3 JSON form SPEC.md §2 asks for: RFC 3339 in UTC
/// with `Z` and as many fraction digits as needed (`2026-11-28T13:04:15.123456Z`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let at = chrono::DateTime::from_timestamp(self.seconds, self.nanos.max(0) as u32)
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let at = chrono::DateTime::parse_from_rfc3339(&text)
            .map_err(|_| serde::de::Error::custom("timestamp must be RFC 3339"))?;
        Ok(Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        })
    }
}

pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub mod zitadel {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/zitadel.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/zitadel.v1.serde.rs"));
    }
    pub mod object {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2.serde.rs"));
        }
        pub mod v2beta {
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2beta.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2beta.serde.rs"));
        }
    }
    pub mod user {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2.serde.rs"));
        }
        pub mod v2beta {
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2beta.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2beta.serde.rs"));
        }
    }
}

pub mod totpservice {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/totpservice.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/totpservice.v1.serde.rs"));
    }
}
