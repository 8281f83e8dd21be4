//! Table tests of the token grants at the flow level.
