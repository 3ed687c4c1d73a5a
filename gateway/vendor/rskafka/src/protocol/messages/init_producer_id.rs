//! InitProducerId (API key 22): a producer id and epoch for an idempotent producer (KIP-98).
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_InitProducerId>
//! - <https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging>
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error,
    primitives::{CompactNullableString, Int16, Int32, Int64, NullableString, TaggedFields},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[derive(Debug)]
pub struct InitProducerIdRequest {
    /// The transactional id, or null if the producer is not transactional.
    pub transactional_id: NullableString,

    /// Only relevant with a transactional id.
    pub transaction_timeout_ms: Int32,

    /// The producer id to bump (KIP-360), or -1 for a new one.
    ///
    /// Added in version 3.
    pub producer_id: Int64,

    /// The epoch of `producer_id`, or -1.
    ///
    /// Added in version 3.
    pub producer_epoch: Int16,
}

impl RequestBody for InitProducerIdRequest {
    type ResponseBody = InitProducerIdResponse;

    const API_KEY: ApiKey = ApiKey::InitProducerId;

    /// v4 only changes which errors a broker returns; v5 adds TRANSACTION_ABORTABLE (KIP-890),
    /// which a producer without transactions never sees.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(4)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

impl<W> WriteVersionedType<W> for InitProducerIdRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        if v >= 2 {
            CompactNullableString(self.transactional_id.0.clone()).write(writer)?;
        } else {
            self.transactional_id.write(writer)?;
        }
        self.transaction_timeout_ms.write(writer)?;
        if v >= 3 {
            self.producer_id.write(writer)?;
            self.producer_epoch.write(writer)?;
        }
        if v >= 2 {
            TaggedFields::default().write(writer)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct InitProducerIdResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota
    /// violation, or zero.
    pub throttle_time_ms: Int32,

    /// The error code, or 0 if there was no error.
    pub error: Option<Error>,

    /// The current producer id.
    pub producer_id: Int64,

    /// The current epoch associated with the producer id.
    pub producer_epoch: Int16,
}

impl<R> ReadVersionedType<R> for InitProducerIdResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        let throttle_time_ms = Int32::read(reader)?;
        let error = Error::new(Int16::read(reader)?.0);
        let producer_id = Int64::read(reader)?;
        let producer_epoch = Int16::read(reader)?;
        if v >= 2 {
            TaggedFields::read(reader)?;
        }
        Ok(Self {
            throttle_time_ms,
            error,
            producer_id,
            producer_epoch,
        })
    }
}
