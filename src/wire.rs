//! Hot-path DNS message view and patching.
