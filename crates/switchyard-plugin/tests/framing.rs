//! The wire's framing under arbitrary reads: however a stream of replies is split across
//! reads, every reply comes out whole, once, in order, with its own id and data.

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::value::RawValue;
use switchyard_plugin::wire::{FrameCodec, Message, MessageType, PluginCodec, Reply};
use tokio_util::codec::{Decoder, Encoder};

fn reply(id: &str, text: &str) -> Reply {
    let message = Message::control(MessageType::Execute, id);
    // Any text, newlines and quotes included, as a JSON string.
    let data = serde_json::value::to_raw_value(text).expect("a string is JSON");
    Reply::ok(&message, Some(data))
}

proptest! {
    #[test]
    fn replies_split_anywhere_come_out_whole_and_in_order(
        texts in prop::collection::vec(".{0,40}", 1..20),
        cuts in prop::collection::vec(1usize..64, 1..50),
    ) {
        let mut plugin = PluginCodec::default();
        let mut wire = BytesMut::new();
        for (i, text) in texts.iter().enumerate() {
            plugin.encode(reply(&format!("req-{i}"), text), &mut wire).unwrap();
        }
        let bytes = wire.freeze();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        let (mut at, mut cut) = (0, cuts.iter().cycle());
        while at < bytes.len() {
            let end = (at + cut.next().unwrap()).min(bytes.len());
            buf.extend_from_slice(&bytes[at..end]);
            at = end;
            while let Some(reply) = codec.decode(&mut buf).unwrap() {
                seen.push(reply);
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(seen.len(), texts.len());
        for (i, (reply, text)) in seen.iter().zip(&texts).enumerate() {
            prop_assert_eq!(&reply.request_id, &format!("req-{i}"));
            let raw = reply.data.as_deref().map(RawValue::get).unwrap();
            let data: String = serde_json::from_str(raw).unwrap();
            prop_assert_eq!(&data, text);
        }
    }
}
