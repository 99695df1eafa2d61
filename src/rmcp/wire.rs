//! The overload error in rmcp's types. The shape and the code are
//! [`crate::jsonrpc`]'s; this module only wraps them.

use ::rmcp::ErrorData;
use ::rmcp::model::{CallToolResult, ContentBlock, ErrorCode, MetaObject};

use crate::jsonrpc;
use crate::overload::Overload;
use crate::tool_failure::ToolFailure;

/// The JSON-RPC error for `overload`, with `code`.
pub fn to_error_data(overload: &Overload, code: i32) -> ErrorData {
    ErrorData::new(
        ErrorCode(code),
        jsonrpc::message(overload),
        Some(jsonrpc::data(overload)),
    )
}

/// [`jsonrpc::tool_result`] in rmcp's type: `isError: true`, the text,
/// the overload `data` as `structuredContent` and the SEP-3313
/// classification in `_meta`.
pub fn to_tool_result(overload: &Overload, failure: &ToolFailure) -> CallToolResult {
    let text = jsonrpc::tool_result_text(overload, failure);
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(jsonrpc::data(overload));
    let serde_json::Value::Object(meta) = failure.to_meta() else {
        unreachable!("the classification's _meta is an object")
    };
    result.meta = Some(MetaObject(meta));
    result
}

/// The error returned for a request cancelled by its client. rmcp never sends
/// it (a cancelled request gets no response); it only ends the handler.
pub(crate) fn cancelled() -> ErrorData {
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        "request cancelled by the client",
        None,
    )
}

/// The error returned for a request that was still waiting for a slot when
/// its client disconnected. rmcp sends it if the transport can still write
/// (a client that closed only its end of stdin reads it on stdout).
pub(crate) fn disconnected() -> ErrorData {
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        "request not started: the client disconnected while it waited for a slot",
        None,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn overload() -> Overload {
        crate::overload::test_overload(Duration::from_millis(5))
    }

    #[test]
    fn rmcp_types_serialize_to_the_shared_shape() {
        let o = overload();
        let error = serde_json::to_value(to_error_data(&o, -31429)).unwrap();
        assert_eq!(error, jsonrpc::error_object(&o, -31429));
        let failure = ToolFailure::of(&o);
        let mut result = serde_json::to_value(to_tool_result(&o, &failure)).unwrap();
        result.as_object_mut().unwrap().remove("resultType");
        assert_eq!(result, jsonrpc::tool_result(&o, &failure));
    }
}
