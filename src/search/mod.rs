//! The search-path model (DESIGN §2): search lists, ndots rules, stub resolver models,
//! decomposition of a name into base + suffix, the Kubernetes schema and the shortcut policy.
