//! Vireo's desktop app: the VM library, the model, connections and the views.
//!
//! Layout: [`library`] keeps VM definitions on disk, [`connection`] is how
//! the app reaches VMs (the in-process engine by default), [`model`] is the
//! state the views draw from, [`ui`] holds the views, [`gui`] ties them
//! together in an eframe window.

pub mod connection;
pub mod gui;
pub mod library;
pub mod model;
pub mod terminal;
pub mod ui;
pub mod vmproc;
