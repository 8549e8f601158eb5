//! Field-level encryption of sensitive data (the spec's "encrypt sensitive data in
//! events"). A deployment names fields by JSON pointer; each value found there is
//! replaced, before the event leaves the gateway, by a self-describing sealed value:
//!
//! `{"alg": "A256GCM", "kid": "<key id>", "iv": "<base64, 12 bytes>", "ciphertext": "<base64>"}`
//!
//! where the ciphertext (with its 16-byte tag appended) is AES-256-GCM over the value's
//! JSON text, with the associated data `{event id}|{pointer}` (e.g.
//! `0193…|/data/metadata/email`), so a sealed value moved to another event or field does
//! not open. Consumers holding the key of that `kid` decrypt it; keys rotate by adding a
//! new id in front.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use uuid::Uuid;

use super::data::EventData;

pub const ALGORITHM: &str = "A256GCM";

/// A JSON pointer into an event's `data`, such as `/data/metadata/email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensitiveField(String);

impl FromStr for SensitiveField {
    type Err = String;

    fn from_str(pointer: &str) -> Result<Self, Self::Err> {
        let Some(inside) = pointer.trim().strip_prefix("/data/") else {
            return Err(format!(
                "'{pointer}' must be a JSON pointer into the event's data, like /data/metadata/email"
            ));
        };
        if inside.is_empty() || inside.split('/').any(str::is_empty) {
            return Err(format!("'{pointer}' has an empty segment"));
        }
        if inside == "userId" {
            return Err(
                "/data/userId routes events to their user's caches and reads; it cannot be sealed"
                    .into(),
            );
        }
        Ok(SensitiveField(format!("/{inside}")))
    }
}

/// One AES-256 key and its id.
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey({}, ***)", self.id)
    }
}

/// `kid=<base64 of 32 bytes>,…`; the first key seals, the others are listed so one value
/// can be shared with consumers, which need every key still in use.
#[derive(Debug, Clone)]
pub struct SealingKeys(Vec<SealingKey>);

impl FromStr for SealingKeys {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let keys = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .zip(1..)
            .map(|(entry, number)| parse_key(entry, number))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no key given".into());
        }
        Ok(SealingKeys(keys))
    }
}

/// A bad entry is named by its place, not by its id: a key pasted without its id (base64
/// holds `=`) reads as one.
fn parse_key(entry: &str, number: usize) -> Result<SealingKey, String> {
    let (id, encoded) = entry
        .split_once('=')
        .ok_or_else(|| format!("entry {number} is not kid=<base64 of 32 bytes>"))?;
    let id = id.trim();
    if !super::is_plain_name(id) {
        return Err(format!(
            "the key id of entry {number} must be 1 to 64 characters of [A-Za-z0-9._-]"
        ));
    }
    let cipher = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| Aes256Gcm::new_from_slice(&bytes).ok())
        .ok_or_else(|| format!("the key of entry {number} must be 32 bytes, base64-encoded"))?;
    Ok(SealingKey {
        id: id.to_owned(),
        cipher,
    })
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("no key with id '{0}'")]
    UnknownKey(String),
    #[error("the ciphertext does not decrypt with key '{0}' (wrong key or tampered)")]
    Tampered(String),
}

impl SealingKeys {
    /// The sealed form of `value`, under the first key, bound to `context`.
    pub fn seal(&self, value: &Value, context: &str) -> Value {
        let key = &self.0[0];
        let iv = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = value.to_string();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = key
            .cipher
            .encrypt(&iv, payload)
            .unwrap_or_else(|_| unreachable!("AES-GCM seals any message under 64 GiB"));
        json!({
            "alg": ALGORITHM,
            "kid": key.id,
            "iv": STANDARD.encode(iv),
            "ciphertext": STANDARD.encode(ciphertext),
        })
    }

    /// What a consumer does: the original value back from its sealed form.
    pub fn open(&self, sealed: &Value, context: &str) -> Result<Value, OpenError> {
        let text = |name: &str| sealed.get(name).and_then(Value::as_str);
        if text("alg") != Some(ALGORITHM) {
            return Err(OpenError::NotSealed);
        }
        let kid = text("kid").ok_or(OpenError::NotSealed)?;
        let decode = |name| {
            text(name)
                .and_then(|v| STANDARD.decode(v).ok())
                .ok_or(OpenError::NotSealed)
        };
        let ciphertext = decode("ciphertext")?;
        let iv: [u8; 12] = decode("iv")?.try_into().map_err(|_| OpenError::NotSealed)?;
        let key = self
            .0
            .iter()
            .find(|key| key.id == kid)
            .ok_or_else(|| OpenError::UnknownKey(kid.to_owned()))?;
        let payload = Payload {
            msg: &ciphertext,
            aad: context.as_bytes(),
        };
        key.cipher
            .decrypt(&Nonce::from(iv), payload)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| OpenError::Tampered(kid.to_owned()))
    }
}

/// The fields a deployment seals, and the keys it seals them with.
#[derive(Debug, Clone)]
pub struct Sealer {
    pub fields: Vec<SensitiveField>,
    pub keys: SealingKeys,
}

impl Sealer {
    /// Seals every sensitive field present in the `data` of event `id`; absent ones are
    /// left absent.
    pub fn seal(&self, id: Uuid, data: &mut EventData) {
        for SensitiveField(pointer) in &self.fields {
            if let Some(value) = data.value_mut(pointer) {
                *value = self.keys.seal(value, &context(&id.to_string(), pointer));
            }
        }
    }

    /// Opens every sealed field of an envelope, for consumers and operators.
    pub fn open_event(&self, event: &mut Value) -> Result<(), OpenError> {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        for SensitiveField(pointer) in &self.fields {
            if let Some(value) = event
                .get_mut("data")
                .and_then(|data| data.pointer_mut(pointer))
            {
                *value = self.keys.open(value, &context(&id, pointer))?;
            }
        }
        Ok(())
    }
}

/// The associated data: which event and which field a sealed value belongs to.
fn context(event_id: &str, pointer: &str) -> String {
    format!("{event_id}|/data{pointer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;

    const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn sealer(keys: &str) -> Sealer {
        Sealer {
            fields: vec!["/data/metadata/email".parse().unwrap()],
            keys: keys.parse().unwrap(),
        }
    }

    #[test]
    fn pointers_must_name_a_data_field_other_than_user_id() {
        assert_eq!(
            "/data/metadata/email".parse::<SensitiveField>().unwrap().0,
            "/metadata/email"
        );
        for bad in [
            "/metadata/email",
            "/data/",
            "/data//x",
            "/data/userId",
            "email",
        ] {
            assert!(bad.parse::<SensitiveField>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_32_bytes_of_base64_with_an_id() {
        assert!(
            format!("k1={KEY_A},k0={KEY_B}")
                .parse::<SealingKeys>()
                .is_ok()
        );
        for bad in ["", "k1", "k1=short", "bad id=AAAA", &format!("k1={KEY_A}x")] {
            assert!(bad.parse::<SealingKeys>().is_err(), "{bad}");
        }
        let debug = format!("{:?}", sealer(&format!("k1={KEY_A}")));
        assert!(debug.contains("k1") && !debug.contains(KEY_A));
    }

    #[test]
    fn a_sealed_field_is_unreadable_and_opens_with_the_key_by_id() {
        let value = json!({"achievementId": "a1", "userId": "u1",
            "metadata": {"email": "ada@example.com", "level": 3}});
        let mut data =
            EventData::parse(EventType::AchievementCompleted, value.clone(), "/data").unwrap();
        let id = Uuid::now_v7();
        sealer(&format!("k2={KEY_B},k1={KEY_A}")).seal(id, &mut data);
        let sealed = serde_json::to_string(data.as_map()).unwrap();
        assert!(!sealed.contains("ada@example.com"), "{sealed}");
        assert_eq!(data.as_map()["metadata"]["email"]["kid"], "k2");
        assert_eq!(data.as_map()["metadata"]["level"], 3, "other fields stay");

        let mut event = json!({"id": id, "data": data.as_map()});
        // A consumer that still lists the old key opens it by the new key's id.
        sealer(&format!("k1={KEY_A},k2={KEY_B}"))
            .open_event(&mut event)
            .unwrap();
        assert_eq!(event["data"], value);

        let mut event = json!({"id": id, "data": data.as_map()});
        assert_eq!(
            sealer(&format!("k1={KEY_A}")).open_event(&mut event),
            Err(OpenError::UnknownKey("k2".into()))
        );
        let mut event = json!({"id": id, "data": data.as_map()});
        assert_eq!(
            sealer(&format!("k2={KEY_A}")).open_event(&mut event),
            Err(OpenError::Tampered("k2".into()))
        );
        // Copied into another event, the sealed value does not open.
        let mut event = json!({"id": Uuid::now_v7(), "data": data.as_map()});
        assert_eq!(
            sealer(&format!("k2={KEY_B}")).open_event(&mut event),
            Err(OpenError::Tampered("k2".into()))
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_iv() {
        let keys: SealingKeys = format!("k1={KEY_A}").parse().unwrap();
        let (a, b) = (keys.seal(&json!("x"), "c"), keys.seal(&json!("x"), "c"));
        assert_ne!(a["iv"], b["iv"]);
        assert_eq!(keys.open(&a, "c"), Ok(json!("x")));
        assert_eq!(keys.open(&a, "d"), Err(OpenError::Tampered("k1".into())));
    }
}
