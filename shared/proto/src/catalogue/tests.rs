use prost::Message;
use tonic::Code;

use super::*;

const GRAPH: &str = "umcp.graph.v1.GraphService";

#[test]
fn the_compiled_in_descriptor_set_gives_every_rpc_a_policy() {
    let catalogue = MethodCatalogue::from_descriptor_set(crate::FILE_DESCRIPTOR_SET).unwrap();
    assert_eq!(
        catalogue.methods().count(),
        30,
        "a new RPC? add it here once it has a policy"
    );
    assert_eq!(
        catalogue.services(),
        [
            GRAPH,
            "umcp.auth.v1.AuthService",
            "umcp.execution.v1.ExecutionService",
            "umcp.audit.v1.AuditService",
        ]
    );
    for method in catalogue.methods() {
        assert_eq!(method.path, format!("/{}/{}", method.service, method.name));
        assert!(!method.rate_class.is_empty());
    }
}

#[test]
fn a_descriptor_set_without_the_options_is_refused_naming_the_rpc() {
    // prost's descriptor types drop unknown extensions, so re-encoding strips every policy.
    let stripped = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .unwrap()
        .encode_to_vec();
    match MethodCatalogue::from_descriptor_set(&stripped) {
        Err(CatalogueError::MissingPolicy { method }) => assert!(method.starts_with("/umcp.")),
        other => panic!("expected MissingPolicy, got {other:?}"),
    }
}

#[test]
fn garbage_is_a_decode_error() {
    let err = MethodCatalogue::from_descriptor_set(b"\xff\xff\xff").unwrap_err();
    assert!(matches!(err, CatalogueError::Decode(_)), "{err}");
}

#[test]
fn lookups_classify_every_kind_of_path() {
    let catalogue = MethodCatalogue::global();
    for bad in ["", "/", "//", "/a", "/a/", "//b", "/a/b/c", "nope", "a/b"] {
        assert_eq!(catalogue.lookup(bad), Lookup::Malformed, "{bad:?}");
    }
    assert_eq!(
        catalogue.lookup("/grpc.health.v1.Health/Check"),
        Lookup::Infrastructure
    );
    assert_eq!(
        catalogue.lookup("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        Lookup::Infrastructure
    );
    assert_eq!(
        catalogue.lookup("/umcp.graph.v1.GraphService/Drop"),
        Lookup::UnknownMethod {
            service: GRAPH,
            method: "Drop"
        }
    );
    assert_eq!(
        catalogue.lookup("/evil.Service/Query"),
        Lookup::UnknownService("evil.Service")
    );
    let Lookup::Method(query) = catalogue.lookup("/umcp.graph.v1.GraphService/Query") else {
        panic!("Query is a method");
    };
    assert_eq!(query.access, Access::Permission(Permission::GraphQuery));
}

#[test]
fn policies_read_back_as_declared() {
    let catalogue = MethodCatalogue::global();
    let upsert = catalogue
        .method("/umcp.graph.v1.GraphService/Upsert")
        .unwrap();
    assert_eq!(upsert.access, Access::Permission(Permission::GraphUpsert));
    assert_eq!(upsert.side_effects, SideEffects::Idempotent);
    assert!(upsert.side_effects.retry_safe());
    let audit = upsert.audit.as_ref().unwrap();
    assert_eq!(audit.before, Some(EventType::GraphUpsert));

    let login = catalogue.method("/umcp.auth.v1.AuthService/Login").unwrap();
    assert_eq!(login.access, Access::Public);
    assert_eq!(login.side_effects, SideEffects::Unsafe);
    assert_eq!(login.rate_class, "sign_in");
    let audit = login.audit.as_ref().unwrap();
    assert_eq!(
        (audit.ok, audit.failed),
        (EventType::AuthSuccess, EventType::AuthFailure)
    );

    let query = catalogue
        .method("/umcp.graph.v1.GraphService/Query")
        .unwrap();
    assert!(
        query
            .audit
            .as_ref()
            .unwrap()
            .violation_on
            .contains(&Code::PermissionDenied)
    );

    let execute = catalogue
        .method("/umcp.execution.v1.ExecutionService/ExecuteStream")
        .unwrap();
    assert!(execute.server_streaming && !execute.client_streaming);
    assert_eq!(execute.side_effects, SideEffects::IdempotentWithKey);
    assert!(!execute.side_effects.retry_safe());
    assert_eq!(execute.rate_class, "execute");
}

#[test]
fn permission_scopes_are_the_token_names() {
    assert_eq!(Permission::GraphQuery.to_string(), "graph:query");
    assert_eq!(Permission::AuthWatch.scope(), "auth:watch");
}
