//! The New VM wizard, five steps as in virt-manager: install media, memory
//! and CPUs, storage, name and network, summary. Every field is checked as
//! it is typed, and a message under it says what to fix; Forward is only
//! enabled when the page is valid. Finish returns
//! [`crate::model::Action::CreateVm`]. `form` holds the state and the
//! checks, `view` draws it.

mod form;
mod view;

pub use form::*;
pub use view::ERROR_COLOR;
