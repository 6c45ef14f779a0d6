//! InfoService.

use orchestrator_proto::{QueryVersionParam, QueryVersionResponse};

use crate::call::Call;
use crate::error::Result;

pub fn query_version(_tx: &mut Call<'_>, _req: QueryVersionParam) -> Result<QueryVersionResponse> {
    // `logic_sha256` is the host's to fill: these bytes cannot hold their own hash.
    Ok(QueryVersionResponse { orchestrator: crate::api::version().to_owned(), logic_sha256: String::new() })
}
