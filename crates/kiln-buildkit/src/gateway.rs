//! The in-client frontend: a job whose LLB kiln hands over call by call through the daemon's
//! LLB bridge (what BuildKit's `client.Build` does). It is how kiln resolves a base image's
//! config, solves a stage and reads files out of the result, and returns the final result
//! together with the image config the exporter writes (Docker's `moby` exporter reads the
//! config only from there).

use std::collections::BTreeMap;

use kiln_fsutil::types::Stat;
use tonic::transport::Channel;

use crate::Error;
use crate::proto::gateway::{self, llb_bridge_client::LlbBridgeClient};

/// The metadata key that ties a bridge call to its job.
const BUILD_ID: &str = "buildkit-controlapi-buildid";

/// How `resolve_image_config` may find the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveMode {
    /// The local store first, then the registry.
    Default,
    /// Always ask the registry.
    Pull,
    /// Only the local store (Docker Engine's images).
    Local,
}

impl ResolveMode {
    fn as_str(self) -> &'static str {
        match self {
            ResolveMode::Default => "default",
            ResolveMode::Pull => "pull",
            ResolveMode::Local => "local",
        }
    }
}

/// A base image's config as the daemon resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The manifest digest, when the image came from a registry (empty for local-only images).
    pub digest: Option<String>,
    /// The image config JSON.
    pub config: Vec<u8>,
}

/// A solved result inside a job; valid until the job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRef {
    id: String,
}

/// What a job returns to the daemon, which then runs the exporter on it.
#[derive(Debug, Clone, Default)]
pub struct Returned {
    pub result: Option<ResultRef>,
    /// Result metadata, e.g. `containerimage.config`.
    pub metadata: BTreeMap<String, Vec<u8>>,
}

/// The bridge of one running job.
#[derive(Clone)]
pub struct Gateway {
    bridge: LlbBridgeClient<Channel>,
    build_id: String,
    /// The connection's keepalive, which a stalled call's error names.
    keepalive: std::time::Duration,
}

impl Gateway {
    pub(crate) fn new(
        channel: Channel,
        build_id: String,
        keepalive: std::time::Duration,
    ) -> Gateway {
        let bridge = LlbBridgeClient::new(channel)
            .max_decoding_message_size(crate::client::MAX_MESSAGE)
            .max_encoding_message_size(crate::client::MAX_MESSAGE);
        Gateway {
            bridge,
            build_id,
            keepalive,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let id = self
            .build_id
            .parse()
            .expect("job refs are ASCII, valid as metadata");
        request.metadata_mut().insert(BUILD_ID, id);
        request
    }

    /// The frontend API capabilities the daemon has enabled.
    pub async fn caps(&self) -> Result<Vec<String>, Error> {
        let pong = self
            .bridge
            .clone()
            .ping(self.request(gateway::PingRequest {}))
            .await
            .map_err(|s| Error::from_status("gateway ping", s, self.keepalive))?
            .into_inner();
        Ok(pong
            .frontend_api_caps
            .into_iter()
            .filter(|c| c.enabled)
            .map(|c| c.id)
            .collect())
    }

    /// The config of image `reference` for `platform`.
    pub async fn resolve_image_config(
        &self,
        reference: &str,
        platform: &kiln_llb::Platform,
        mode: ResolveMode,
    ) -> Result<ResolvedImage, Error> {
        let response = self
            .bridge
            .clone()
            .resolve_image_config(self.request(gateway::ResolveImageConfigRequest {
                r#ref: reference.to_string(),
                platform: Some(kiln_llb::pb::Platform::from(platform)),
                resolve_mode: mode.as_str().to_string(),
                log_name: format!("resolve image config for {reference}"),
            }))
            .await
            .map_err(|s| Error::from_status("resolve image config", s, self.keepalive))?
            .into_inner();
        Ok(ResolvedImage {
            digest: Some(response.digest).filter(|d| !d.is_empty()),
            config: response.config,
        })
    }

    /// Solve `definition` now (not lazily) and return a reference to its result.
    pub async fn solve(&self, definition: &kiln_llb::Definition) -> Result<ResultRef, Error> {
        self.solve_importing(definition, &[]).await
    }

    /// [`Gateway::solve`] that may take steps from remote caches (`registry` with a `ref`):
    /// a frontend's solves do not see the job's own cache imports.
    pub async fn solve_importing(
        &self,
        definition: &kiln_llb::Definition,
        imports: &[(String, std::collections::BTreeMap<String, String>)],
    ) -> Result<ResultRef, Error> {
        let cache_imports = imports
            .iter()
            .map(|(t, a)| gateway::CacheOptionsEntry {
                r#type: t.clone(),
                attrs: a.clone().into_iter().collect(),
            })
            .collect();
        let response = self
            .bridge
            .clone()
            .solve(self.request(gateway::SolveRequest {
                definition: Some(definition.to_pb()),
                allow_result_return: true,
                allow_result_array_ref: true,
                evaluate: true,
                cache_imports,
                ..gateway::SolveRequest::default()
            }))
            .await
            .map_err(|s| Error::from_status("solve", s, self.keepalive))?
            .into_inner();
        let id = match response.result.and_then(|r| r.result) {
            Some(gateway::result::Result::Ref(r)) => r.id,
            Some(gateway::result::Result::RefDeprecated(id)) => id,
            None => response.r#ref,
        };
        Ok(ResultRef { id })
    }

    /// The whole of file `path` in `result`.
    pub async fn read_file(&self, result: &ResultRef, path: &str) -> Result<Vec<u8>, Error> {
        let response = self
            .bridge
            .clone()
            .read_file(self.request(gateway::ReadFileRequest {
                r#ref: result.id.clone(),
                file_path: path.to_string(),
                range: None,
            }))
            .await
            .map_err(|s| Error::from_status("read file", s, self.keepalive))?;
        Ok(response.into_inner().data)
    }

    /// The entries of directory `path` in `result` whose names match `pattern` (all if empty).
    pub async fn read_dir(
        &self,
        result: &ResultRef,
        path: &str,
        pattern: &str,
    ) -> Result<Vec<Stat>, Error> {
        let response = self
            .bridge
            .clone()
            .read_dir(self.request(gateway::ReadDirRequest {
                r#ref: result.id.clone(),
                dir_path: path.to_string(),
                include_pattern: pattern.to_string(),
            }))
            .await
            .map_err(|s| Error::from_status("read directory", s, self.keepalive))?;
        Ok(response.into_inner().entries)
    }

    /// The metadata of `path` in `result`.
    pub async fn stat_file(&self, result: &ResultRef, path: &str) -> Result<Stat, Error> {
        let response = self
            .bridge
            .clone()
            .stat_file(self.request(gateway::StatFileRequest {
                r#ref: result.id.clone(),
                path: path.to_string(),
            }))
            .await
            .map_err(|s| Error::from_status("stat file", s, self.keepalive))?;
        response.into_inner().stat.ok_or_else(|| Error::Failed {
            action: "stat file",
            message: format!("no such file: {path}"),
        })
    }

    /// End the job's frontend part: the daemon exports `returned`, or fails the job with
    /// `error`. Every job must end with exactly one of these.
    pub(crate) async fn finish(&self, returned: Result<Returned, String>) -> Result<(), Error> {
        let request = match returned {
            Ok(returned) => gateway::ReturnRequest {
                result: Some(gateway::Result {
                    result: returned.result.map(|r| {
                        gateway::result::Result::Ref(gateway::Ref {
                            id: r.id,
                            def: Vec::new(),
                        })
                    }),
                    metadata: returned.metadata,
                }),
                error: None,
            },
            Err(message) => gateway::ReturnRequest {
                result: None,
                // 2 is gRPC's UNKNOWN, what the Go client sends for a plain error.
                error: Some(gateway::Status { code: 2, message }),
            },
        };
        self.bridge
            .clone()
            .r#return(self.request(request))
            .await
            .map_err(|s| Error::from_status("return the result", s, self.keepalive))?;
        Ok(())
    }
}
