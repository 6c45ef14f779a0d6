//! InfoService.

use orchestrator_proto::{QueryVersionParam, QueryVersionResponse};

use crate::error::Result;
use crate::tx::Tx;

pub fn query_version(_tx: &mut Tx<'_>, _req: QueryVersionParam) -> Result<QueryVersionResponse> {
    Ok(QueryVersionResponse { orchestrator: crate::api::version().to_owned() })
}
