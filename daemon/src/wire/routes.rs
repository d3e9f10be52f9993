//! The route table of the whole server: one exact route per method that a
//! served service declares, and an answer for everything else.
//!
//! tonic routes `/{service}/*` to each service and answers any other path
//! with UNIMPLEMENTED and an empty message; a generated service does the
//! same for a method it does not know. A client of another version, or a
//! tool with a typo, then learns nothing. Here every method path comes from
//! the services' own descriptor sets, and any other path is answered
//! UNIMPLEMENTED with a message naming the path and what is served.

use std::convert::Infallible;

use axum::response::IntoResponse;
use prost::Message;
use prost_types::FileDescriptorSet;
use tonic::server::NamedService;
use tonic::Status;
use tower::ServiceExt;

use super::check::quote;

/// A descriptor set that does not decode or lacks its service: a build
/// defect, reported at startup rather than as missing methods later.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("descriptor set of {service} does not decode: {source}")]
    Descriptor {
        service: &'static str,
        source: prost::DecodeError,
    },
    #[error("descriptor set declares no methods for {0}")]
    NoMethods(&'static str),
}

/// Routes under construction; `finish` adds the answer for unknown paths.
#[derive(Default)]
pub struct RouteTable {
    router: axum::Router,
    services: Vec<&'static str>,
}

impl RouteTable {
    /// Routes each method of `service` that `descriptor_set` declares.
    pub fn serve<S>(mut self, service: S, descriptor_set: &[u8]) -> Result<Self, RouteError>
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        for path in method_paths(descriptor_set, S::NAME)? {
            let to_tonic_body =
                |request: http::Request<axum::body::Body>| request.map(tonic::body::Body::new);
            self.router = self
                .router
                .route_service(&path, service.clone().map_request(to_tonic_body));
        }
        self.services.push(S::NAME);
        Ok(self)
    }

    /// The routes for tonic, with unknown paths answered by name.
    pub fn finish(self) -> tonic::service::Routes {
        let served = self.services.join(", ");
        let router = self.router.fallback(move |uri: http::Uri| {
            let served = served.clone();
            async move { unknown_method(uri.path(), &served).into_http::<axum::body::Body>() }
        });
        tonic::service::Routes::from(router)
    }
}

/// `/package.Service/Method` for each method the set declares for `service`.
fn method_paths(descriptor_set: &[u8], service: &'static str) -> Result<Vec<String>, RouteError> {
    let set = FileDescriptorSet::decode(descriptor_set)
        .map_err(|source| RouteError::Descriptor { service, source })?;
    let paths: Vec<String> = set
        .file
        .iter()
        .flat_map(|file| {
            let package = file.package();
            file.service.iter().map(move |declared| (package, declared))
        })
        .filter(|(package, declared)| qualified(package, declared.name()) == service)
        .flat_map(|(_, declared)| declared.method.iter())
        .map(|method| format!("/{service}/{}", method.name()))
        .collect();
    if paths.is_empty() {
        return Err(RouteError::NoMethods(service));
    }
    Ok(paths)
}

fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_owned()
    } else {
        format!("{package}.{name}")
    }
}

/// UNIMPLEMENTED for a path no served service declares.
pub fn unknown_method(path: &str, served: &str) -> Status {
    Status::unimplemented(format!(
        "no method \"{}\" here; this daemon serves {served}",
        quote(path.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finder_method_is_routed() {
        let paths = method_paths(finderd_proto::v1::FILE_DESCRIPTOR_SET, "finderd.v1.Finder")
            .expect("finderd's own descriptor set");
        for method in ["Snapshot", "Lookup", "Stats", "Report"] {
            assert!(
                paths.contains(&format!("/finderd.v1.Finder/{method}")),
                "{paths:?}"
            );
        }
    }

    #[test]
    fn a_service_the_set_does_not_declare_is_an_error() {
        let error = method_paths(tonic_health::pb::FILE_DESCRIPTOR_SET, "finderd.v1.Finder");
        assert!(matches!(error, Err(RouteError::NoMethods(_))), "{error:?}");
        let error = method_paths(b"\xff\xff", "finderd.v1.Finder");
        assert!(
            matches!(error, Err(RouteError::Descriptor { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_paths_are_named_and_bounded() {
        let status = unknown_method("/finderd.v2.Finder/Snapshot", "finderd.v1.Finder");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(
            status.message(),
            "no method \"/finderd.v2.Finder/Snapshot\" here; this daemon serves finderd.v1.Finder"
        );
        let long = format!("/{}", "x".repeat(10_000));
        assert!(
            unknown_method(&long, "s").message().len()
                < super::super::check::QUOTED_PATH_BYTES + 64
        );
    }
}
