//! Key types strait issues for, and key generation.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, SignatureAlgorithm};

use crate::CaError;

/// The signature key types strait can issue: ECDSA P-256 (the default),
/// ECDSA P-384 and Ed25519.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeyType {
    #[default]
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 3] = [KeyType::P256, KeyType::P384, KeyType::Ed25519];

    pub fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// Generates a fresh private key of this type.
    pub fn generate(self) -> Result<KeyPair, CaError> {
        Ok(KeyPair::generate_for(self.algorithm())?)
    }

    /// The type of an existing key, if it is one strait issues with.
    pub fn of(key: &KeyPair) -> Option<KeyType> {
        KeyType::ALL
            .into_iter()
            .find(|t| key.algorithm() == t.algorithm())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, CaError> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" => Ok(KeyType::P256),
            "p384" | "p-384" | "ecdsa-p384" => Ok(KeyType::P384),
            "ed25519" => Ok(KeyType::Ed25519),
            _ => Err(CaError::UnknownKeyType(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_each_type() {
        for t in KeyType::ALL {
            let key = t.generate().unwrap();
            assert_eq!(KeyType::of(&key), Some(t));
            assert_eq!(t.as_str().parse::<KeyType>().unwrap(), t);
        }
        assert!(matches!(
            "rsa".parse::<KeyType>(),
            Err(CaError::UnknownKeyType(_))
        ));
    }
}
