//! Target platforms on the wire: the type is kiln-reference's [`Platform`] (re-exported), and
//! this is its LLB message.

pub use kiln_reference::{Platform, PlatformError};

use crate::pb;

impl From<&Platform> for pb::Platform {
    fn from(p: &Platform) -> pb::Platform {
        pb::Platform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone().unwrap_or_default(),
            ..pb::Platform::default()
        }
    }
}
