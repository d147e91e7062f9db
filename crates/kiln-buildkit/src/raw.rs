//! A gRPC codec that leaves messages undecoded, for FileSend: the same method carries fsutil
//! packets (the local exporter) or raw `BytesMessage` chunks (the tar, docker and oci
//! exporters), and the session decodes each message as what it expects.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// One gRPC message's bytes, as they travel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame(pub Bytes);

/// Encodes and decodes [`Frame`]s as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Frame;
    type Decode = Frame;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Frame;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
        let n = src.remaining();
        Ok(Some(Frame(src.copy_to_bytes(n))))
    }
}
