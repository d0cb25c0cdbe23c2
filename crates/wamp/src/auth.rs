//! The cryptography of WAMP authentication, pure, for the router that
//! checks and the client that signs: WAMP-CRA signatures (HMAC-SHA256,
//! base64) and salted keys (PBKDF2-HMAC-SHA256, as the spec and autobahn
//! derive them), ticket hashes (SHA-256), cryptosign (Ed25519) signatures,
//! and constant-time comparison.

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Equal, in time that depends only on the lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// SHA-256, hex (how a ticket's hash is configured).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// WAMP-CRA's derived key for a salted secret: PBKDF2-HMAC-SHA256 over the
/// secret and salt, `keylen` bytes, base64 (the key the client signs with).
pub fn derive_cra_key(secret: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    let mut key = vec![0u8; keylen];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// WAMP-CRA's signature of a challenge: base64(HMAC-SHA256(key, challenge)).
pub fn cra_signature(key: &[u8], challenge: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(challenge.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A cryptosign public key from its hex form.
pub fn public_key(hex_key: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not a hex Ed25519 public key: {e}"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&key).map_err(|e| format!("not an Ed25519 public key: {e}"))?;
    Ok(key)
}

/// The hex public key of the Ed25519 key whose 32-byte seed (private
/// key) is `seed`: what a cryptosign client announces as `pubkey`.
pub fn cryptosign_public_key(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// A cryptosign client's answer to a challenge (`challenge_hex`, as the
/// CHALLENGE's `extra.challenge` carries it): the Ed25519 signature of the
/// challenge's bytes followed by those bytes, hex, as autobahn and
/// Crossbar.io send it (the form that routers checking either shape
/// accept).
pub fn cryptosign_sign(seed: &[u8; 32], challenge_hex: &str) -> Result<String, String> {
    let challenge = hex::decode(challenge_hex).map_err(|e| format!("the challenge is not hex: {e}"))?;
    let mut signed = SigningKey::from_bytes(seed).sign(&challenge).to_bytes().to_vec();
    signed.extend_from_slice(&challenge);
    Ok(hex::encode(signed))
}

/// Whether `signature_hex` signs `challenge` with `key`. The client sends
/// the 64-byte signature, or (autobahn) the signature followed by the
/// signed message, which must then be the challenge.
pub fn cryptosign_ok(key: &[u8; 32], challenge: &[u8], signature_hex: &str) -> bool {
    let Ok(bytes) = hex::decode(signature_hex) else { return false };
    let sig = match bytes.len() {
        64 => &bytes[..],
        n if n == 64 + challenge.len() && ct_eq(&bytes[64..], challenge) => &bytes[..64],
        _ => return false,
    };
    let Ok(sig) = Signature::from_slice(sig) else { return false };
    let Ok(key) = VerifyingKey::from_bytes(key) else { return false };
    key.verify(challenge, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cra_matches_the_spec_and_autobahn() {
        // PBKDF2-HMAC-SHA256, 1000 iterations, 32 bytes (autobahn's
        // `derive_key("secret", "salt")`), and its HMAC of a challenge:
        // the values Python's hashlib and hmac give.
        let key = derive_cra_key("secret", "salt", 1000, 32);
        assert_eq!(key, "qN+JnzxPIE2WfgrWPAkph8EAVeuwF7PZ0ordIY1Peq0=");
        let sig = cra_signature(key.as_bytes(), "challenge");
        assert_eq!(sig, "v+jLKn4z4EG3UX2nCKg5DrPh7e8YfZ0vNdM7IH72rlg=");
        assert_ne!(sig, cra_signature(b"other", "challenge"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn cryptosign_signatures() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pk = public_key(&hex::encode(sk.verifying_key().to_bytes())).unwrap();
        let challenge = [3u8; 32];
        let sig = sk.sign(&challenge).to_bytes();
        assert!(cryptosign_ok(&pk, &challenge, &hex::encode(sig)));
        let mut with_message = sig.to_vec();
        with_message.extend_from_slice(&challenge);
        assert!(cryptosign_ok(&pk, &challenge, &hex::encode(&with_message)));
        assert!(!cryptosign_ok(&pk, &[4u8; 32], &hex::encode(sig)), "another challenge");
        let mut forged = sig;
        forged[0] ^= 1;
        assert!(!cryptosign_ok(&pk, &challenge, &hex::encode(forged)));
        assert!(!cryptosign_ok(&pk, &challenge, "zz"));
        assert!(public_key("abcd").is_err());
        // The signing side's answer passes the checking side.
        let answer = cryptosign_sign(&[7u8; 32], &hex::encode(challenge)).unwrap();
        assert_eq!(answer.len(), 2 * (64 + 32));
        assert!(cryptosign_ok(&pk, &challenge, &answer));
        assert_eq!(cryptosign_public_key(&[7u8; 32]), hex::encode(pk));
        assert!(cryptosign_sign(&[7u8; 32], "not hex").is_err());
    }
}
