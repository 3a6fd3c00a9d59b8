//! gRPC status code names as the policy options spell them (`PERMISSION_DENIED`).

use tonic::Code;

/// Canonical names, indexed by code number (the gRPC status code list).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code a canonical name stands for.
pub(super) fn code(name: &str) -> Option<Code> {
    let index = NAMES.iter().position(|n| *n == name)?;
    i32::try_from(index).ok().map(Code::from_i32)
}

/// The canonical upper-case name of `code` (what grpcurl, the gRPC docs, metrics labels and the
/// policy options use).
#[must_use]
pub fn code_name(code: Code) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// Every accepted name, for error messages.
pub(super) fn all() -> String {
    NAMES.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_maps_to_the_code_of_its_number() {
        assert_eq!(code("OK"), Some(Code::Ok));
        assert_eq!(code("PERMISSION_DENIED"), Some(Code::PermissionDenied));
        assert_eq!(code("UNAUTHENTICATED"), Some(Code::Unauthenticated));
        assert_eq!(code("RESOURCE_EXHAUSTED"), Some(Code::ResourceExhausted));
        assert_eq!(code("permission_denied"), None);
        assert_eq!(code(""), None);
        for n in 0..17 {
            let c = Code::from_i32(n);
            assert_eq!(code(code_name(c)), Some(c));
        }
    }
}
