//! Capture readers (DESIGN §5): each format streams `QueryEvent`s with constant memory.
