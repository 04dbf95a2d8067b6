//! `--no-resolve-image` of `service create/update`, and the manager's
//! warnings about images it could not pin to a digest.

/// Whether the manager pins the image's tag to a digest.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResolveFlags {
    /// Do not query the registry to pin the image to a digest (nodes then
    /// pull the tag independently and may run different versions).
    #[arg(long)]
    pub no_resolve_image: bool,
}

/// Prints the manager's warnings on stderr, as Docker does.
pub fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("{warning}");
    }
}
