//! Module registration: what a module's `register_module` entry point tells the
//! server (IIS's `IHttpModuleRegistrationInfo`).

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::module::{GlobalModule, HttpModuleFactory, ModuleError};
use riis_notification::{
    GlobalNotification, GlobalNotifications, Priority, RequestNotification, RequestNotifications,
};

/// The server version handed to `register_module`: the IIS API level riis
/// implements (IIS 10), so ported modules that check for 7 or later load.
pub const SERVER_VERSION: u32 = 10;

/// A module's position in the module list; the tie-break order of dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleIndex(pub(crate) u16);

impl ModuleIndex {
    /// The position in the module list.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// What the server tells a module at registration (IIS's `IHttpServer`, the
/// part that makes sense before the first request).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server software, as in the `Server` header (`riis/0.1.0`).
    pub software: &'static str,
    /// The folder a relative path in the configuration is taken from: the
    /// configuration file's own. Empty (the current folder) when there is
    /// no file. A module takes the relative paths of its sections from it
    /// (`configuration_folder.join(path)`), as the server does site roots.
    pub configuration_folder: std::path::PathBuf,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            software: concat!("riis/", env!("CARGO_PKG_VERSION")),
            configuration_folder: std::path::PathBuf::new(),
        }
    }
}

thread_local! {
    /// The configuration's folder while the server parses sections.
    static PARSING_FOLDER: std::cell::RefCell<Option<std::path::PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// The folder a relative path in a configuration section is taken from,
/// for a section type's own `Deserialize` code (a path it checks or loads
/// as it is parsed, so that an error names the key and line): the
/// configuration file's folder while the server parses sections
/// ([`ServerInfo::configuration_folder`]), the current folder otherwise.
pub fn configuration_folder() -> std::path::PathBuf {
    PARSING_FOLDER.with(|folder| folder.borrow().clone().unwrap_or_default())
}

/// Sets [`configuration_folder`] on this thread until dropped.
pub(crate) struct ParsingFolder(Option<std::path::PathBuf>);

impl ParsingFolder {
    pub(crate) fn set(folder: &std::path::Path) -> Self {
        let before = PARSING_FOLDER.with(|f| f.replace(Some(folder.to_owned())));
        ParsingFolder(before)
    }
}

impl Drop for ParsingFolder {
    fn drop(&mut self) {
        let before = self.0.take();
        PARSING_FOLDER.with(|f| *f.borrow_mut() = before);
    }
}

/// The entry point every module provides, compiled in or loaded from a library:
/// IIS's `RegisterModule(dwServerVersion, pModuleInfo, pGlobalInfo)`.
pub type RegisterModuleFn =
    fn(u32, &mut ModuleRegistration<'_>, &ServerInfo) -> Result<(), ModuleError>;

/// A typed handle to a configuration section a module declared; reading it
/// from a context gives the value resolved for the request's location.
pub struct Section<T> {
    pub(crate) id: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Section<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Section<T> {}

impl<T> std::fmt::Debug for Section<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Section({})", self.id)
    }
}

/// A section error: the key inside the section (dotted, may be empty) and
/// what is wrong with it.
pub(crate) type SectionParseError = (String, String);

pub(crate) type SectionParser =
    fn(toml::Value) -> Result<Arc<dyn Any + Send + Sync>, SectionParseError>;

/// [`InheritedSection::inherit`] for a declared type: the value just
/// parsed for a level, the enclosing level's, and the table the level
/// wrote.
pub(crate) type SectionInheritor = fn(
    &mut Arc<dyn Any + Send + Sync>,
    &Arc<dyn Any + Send + Sync>,
    &toml::Table,
) -> Result<(), SectionParseError>;

fn parse_section<T: DeserializeOwned + Send + Sync + 'static>(
    value: toml::Value,
) -> Result<Arc<dyn Any + Send + Sync>, SectionParseError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>)
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // The bare message: the path already says where.
            keys_out_of(path, e.into_inner().message().trim().to_owned())
        })
}

/// Moves the keys that checks made after serde put into `message` (see
/// [`error_at_key`]) onto `path`, the outer first, wherever a wrapping
/// message put them.
fn keys_out_of(mut path: String, mut message: String) -> SectionParseError {
    while let Some(start) = message.find(KEY_MARK) {
        let after = start + KEY_MARK.len_utf8();
        let Some(length) = message[after..].find(KEY_MARK) else {
            message.remove(start);
            continue;
        };
        let key = &message[after..after + length];
        if !path.is_empty() && !key.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        message.replace_range(start..after + length + KEY_MARK.len_utf8(), "");
    }
    (path, message)
}

fn inherit_section<T: InheritedSection>(
    value: &mut Arc<dyn Any + Send + Sync>,
    outer: &Arc<dyn Any + Send + Sync>,
    written: &toml::Table,
) -> Result<(), SectionParseError> {
    // Both were made by `parse_section::<T>`, and `value` has just been
    // parsed: it has no other owner yet.
    let (Some(value), Some(outer)) = (
        Arc::get_mut(value).and_then(|v| v.downcast_mut::<T>()),
        outer.downcast_ref::<T>(),
    ) else {
        return Err((
            String::new(),
            "internal error: a section inherited a value of another type".to_owned(),
        ));
    };
    value
        .inherit(outer, written)
        .map_err(|message| keys_out_of(String::new(), message))
}

/// A section type whose values add to those of the levels around them, as
/// IIS's collections do (a folder's URL Rewrite rules run after those of
/// its parents), where a plain section's arrays replace what they inherit.
/// Declared with [`ModuleRegistration::declare_inherited_section`].
pub trait InheritedSection: DeserializeOwned + Send + Sync + 'static {
    /// Completes the value of a level (server, site, location) that writes
    /// the section. `self` is parsed as any section's is, from the tables
    /// of the levels merged up to this one (arrays replaced, not added to);
    /// `outer` is the value resolved for the enclosing level, after its own
    /// `inherit`; `written` is the table this level wrote, to tell what it
    /// set itself from what it merely inherited. Called outermost level
    /// first, once per level and location when the configuration loads. An
    /// error (through [`error_at_key`] to name a key of `written`) is a
    /// configuration error at this level's table.
    fn inherit(&mut self, outer: &Self, written: &toml::Table) -> Result<(), String>;
}

/// Brackets the key path [`error_at_key`] puts before its message.
const KEY_MARK: char = '\u{1}';

/// An error message for a section's own checks that names the key it is
/// about: `key` is a path inside the value being deserialized
/// (`rules[2].pattern`, `maps.Redirects`). A `TryFrom` that checks the
/// parts of a section against each other (a rule's reference to a map
/// defined beside it) knows no more to serde than the section; returned
/// through this, the configuration error names that key and its line
/// instead of the section's. A message that wraps such an error
/// (`format!("rule x: {e}")`) keeps its key; nested ones add theirs.
pub fn error_at_key(key: &str, message: impl std::fmt::Display) -> String {
    format!("{KEY_MARK}{key}{KEY_MARK}{message}")
}

/// A declared configuration section.
pub(crate) struct SectionDeclaration {
    pub(crate) name: String,
    pub(crate) module: String,
    pub(crate) parse: SectionParser,
    /// The type the section parses into: a module may share the section
    /// only with the same type.
    pub(crate) type_id: std::any::TypeId,
    /// Declared by its owner (`module`), not only shared so far (`module`
    /// is then the first module that shares it).
    pub(crate) owned: bool,
    /// How a level's value adds to its enclosing level's, for a section
    /// its owner declared inherited.
    pub(crate) inherit: Option<SectionInheritor>,
    /// The keys the section may hold, when its owner said (a section read
    /// as an untyped table: a native module's); any other is a
    /// configuration error.
    pub(crate) keys: Option<Arc<[String]>>,
}

/// Everything one module registered.
pub(crate) struct ModuleEntry {
    pub(crate) name: Arc<str>,
    pub(crate) factory: Option<Box<dyn HttpModuleFactory>>,
    pub(crate) notifications: RequestNotifications,
    pub(crate) post_notifications: RequestNotifications,
    /// Priority per notification, indexed by the bit's position (0..32).
    pub(crate) priorities: [Priority; 32],
    /// Priority per post-event, indexed by stage (0..12).
    pub(crate) post_priorities: [Priority; 12],
    pub(crate) global: Option<Arc<dyn GlobalModule>>,
    pub(crate) global_notifications: GlobalNotifications,
    pub(crate) global_priorities: [Priority; 15],
}

impl ModuleEntry {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            factory: None,
            notifications: RequestNotifications::NONE,
            post_notifications: RequestNotifications::NONE,
            priorities: [Priority::Medium; 32],
            post_priorities: [Priority::Medium; 12],
            global: None,
            global_notifications: GlobalNotifications::NONE,
            global_priorities: [Priority::Medium; 15],
        }
    }

    pub(crate) fn priority(&self, n: RequestNotification, post: bool) -> Priority {
        match (post, n.stage()) {
            (true, Some(stage)) => self.post_priorities[stage],
            _ => self.priorities[n.bit().trailing_zeros() as usize],
        }
    }
}

/// What `register_module` receives to register its factory, notifications,
/// priorities, global module and configuration sections.
pub struct ModuleRegistration<'a> {
    pub(crate) index: ModuleIndex,
    pub(crate) entry: &'a mut ModuleEntry,
    pub(crate) sections: &'a mut Vec<SectionDeclaration>,
}

impl ModuleRegistration<'_> {
    /// `GetName`: the module's name from the module list.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// `GetId`: the module's identity, the key of its module contexts.
    pub fn id(&self) -> ModuleIndex {
        self.index
    }

    /// `SetRequestNotifications`: the factory that makes one instance per
    /// request, the notifications and the post-event notifications wanted.
    /// Post-event bits of nondeterministic notifications are refused, as they
    /// have no post-event.
    pub fn set_request_notifications(
        &mut self,
        factory: impl HttpModuleFactory,
        notifications: RequestNotifications,
        post_notifications: RequestNotifications,
    ) -> Result<(), ModuleError> {
        self.set_request_notifications_boxed(Box::new(factory), notifications, post_notifications)
    }

    /// [`ModuleRegistration::set_request_notifications`] with a boxed factory.
    pub fn set_request_notifications_boxed(
        &mut self,
        factory: Box<dyn HttpModuleFactory>,
        notifications: RequestNotifications,
        post_notifications: RequestNotifications,
    ) -> Result<(), ModuleError> {
        if self.entry.factory.is_some() {
            return Err(ModuleError::with_hresult(
                format!(
                    "module {} set its request notifications twice",
                    self.entry.name
                ),
                ModuleError::E_INVALIDARG,
            ));
        }
        if post_notifications.bits() & !RequestNotifications::ALL_DETERMINISTIC.bits() != 0 {
            return Err(ModuleError::with_hresult(
                format!(
                    "module {} asked for post-events of notifications that have none (mask 0x{:08X})",
                    self.entry.name,
                    post_notifications.bits()
                ),
                ModuleError::E_INVALIDARG,
            ));
        }
        self.entry.factory = Some(factory);
        self.entry.notifications = notifications;
        self.entry.post_notifications = post_notifications;
        Ok(())
    }

    /// `SetPriorityForRequestNotification`, for the event itself.
    pub fn set_priority_for_request_notification(
        &mut self,
        notification: RequestNotification,
        priority: Priority,
    ) {
        self.entry.priorities[notification.bit().trailing_zeros() as usize] = priority;
    }

    /// The priority of a post-event (IIS sets one priority for both; riis
    /// lets them differ, and this is the post-event's).
    pub fn set_priority_for_post_request_notification(
        &mut self,
        notification: RequestNotification,
        priority: Priority,
    ) -> Result<(), ModuleError> {
        let stage = notification.stage().ok_or_else(|| {
            ModuleError::with_hresult(
                format!("{notification} has no post-event"),
                ModuleError::E_INVALIDARG,
            )
        })?;
        self.entry.post_priorities[stage] = priority;
        Ok(())
    }

    /// `SetGlobalNotifications`: a global module and the global notifications
    /// it wants.
    pub fn set_global_notifications(
        &mut self,
        module: impl GlobalModule,
        notifications: GlobalNotifications,
    ) -> Result<(), ModuleError> {
        self.set_global_notifications_arc(Arc::new(module), notifications)
    }

    /// [`ModuleRegistration::set_global_notifications`] with a shared module.
    pub fn set_global_notifications_arc(
        &mut self,
        module: Arc<dyn GlobalModule>,
        notifications: GlobalNotifications,
    ) -> Result<(), ModuleError> {
        if self.entry.global.is_some() {
            return Err(ModuleError::with_hresult(
                format!(
                    "module {} set its global notifications twice",
                    self.entry.name
                ),
                ModuleError::E_INVALIDARG,
            ));
        }
        self.entry.global = Some(module);
        self.entry.global_notifications = notifications;
        Ok(())
    }

    /// `SetPriorityForGlobalNotification`.
    pub fn set_priority_for_global_notification(
        &mut self,
        notification: GlobalNotification,
        priority: Priority,
    ) {
        self.entry.global_priorities[notification.index()] = priority;
    }

    /// Declares a configuration section named `name` (a TOML table at server,
    /// site or location level). The server validates every occurrence at
    /// start-up, merges them per location (inner locations override outer
    /// ones key by key) and hands requests the resolved value. Missing keys
    /// take the type's serde defaults, so `T` should derive `Default` and use
    /// `#[serde(default)]`.
    ///
    /// The name belongs to one module: declaring one another module
    /// declared fails registration, naming both. A module that reads
    /// another's section uses [`ModuleRegistration::share_section`].
    pub fn declare_section<T>(&mut self, name: &str) -> Result<Section<T>, ModuleError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.add_section::<T>(name, true, None)
    }

    /// Declares a section as [`Self::declare_section`] does, whose levels
    /// add to one another through [`InheritedSection::inherit`] instead of
    /// only replacing what they inherit.
    pub fn declare_inherited_section<T>(&mut self, name: &str) -> Result<Section<T>, ModuleError>
    where
        T: InheritedSection,
    {
        self.add_section::<T>(name, true, Some(inherit_section::<T>))
    }

    /// Limits the top-level keys of `section`, which this module declared,
    /// to `keys`: any other key, at any level of the configuration, is a
    /// configuration error naming its file, line and key, and the keys
    /// the module reads. For a section read as an untyped table (a native
    /// or SDK module's), which the engine cannot check otherwise: a
    /// misspelt key would read as missing.
    pub fn limit_section_keys<T>(
        &mut self,
        section: Section<T>,
        keys: &[&str],
    ) -> Result<(), ModuleError> {
        let declared = self
            .sections
            .get_mut(section.id)
            .filter(|d| d.owned && d.module == *self.entry.name);
        let Some(declared) = declared else {
            return Err(ModuleError::with_hresult(
                format!(
                    "module {} limits the keys of a section it did not declare",
                    self.entry.name
                ),
                ModuleError::E_INVALIDARG,
            ));
        };
        // The check is of the section's own keys: a dotted name (which a
        // native module's config_value reads inside a table) would refuse
        // the table that holds it.
        if let Some(key) = keys.iter().find(|k| k.is_empty() || k.contains('.')) {
            return Err(ModuleError::with_hresult(
                format!("`{key}` is no key of the section itself (a table's keys are not checked inside)"),
                ModuleError::E_INVALIDARG,
            ));
        }
        declared.keys = Some(keys.iter().map(|k| (*k).to_owned()).collect());
        Ok(())
    }

    /// Reads the section `name` that another module declares with the same
    /// `T` (as DefaultDocument reads StaticFile's `static_file`, to pass
    /// over the documents StaticFile would refuse): both get the same
    /// resolved value, whichever of them is listed first, and the section
    /// is valid even when its owner is not listed at all. A section of
    /// another type under that name fails registration.
    pub fn share_section<T>(&mut self, name: &str) -> Result<Section<T>, ModuleError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.add_section::<T>(name, false, None)
    }

    /// [`Self::declare_section`] (`owner`) or [`Self::share_section`].
    fn add_section<T>(
        &mut self,
        name: &str,
        owner: bool,
        inherit: Option<SectionInheritor>,
    ) -> Result<Section<T>, ModuleError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let type_id = std::any::TypeId::of::<T>();
        let Some(id) = self.sections.iter().position(|s| s.name == name) else {
            self.sections.push(SectionDeclaration {
                name: name.to_owned(),
                module: self.entry.name.to_string(),
                parse: parse_section::<T>,
                type_id,
                owned: owner,
                inherit,
                keys: None,
            });
            return Ok(Section {
                id: self.sections.len() - 1,
                _type: PhantomData,
            });
        };
        let other = &mut self.sections[id];
        let conflict = if other.type_id != type_id {
            Some("with another type")
        } else if owner && other.owned {
            Some("already")
        } else {
            None
        };
        if let Some(why) = conflict {
            let verb = if owner { "declares" } else { "shares" };
            return Err(ModuleError::with_hresult(
                format!(
                    "module {} {verb} section `{name}`, which module {} declared {why}",
                    self.entry.name, other.module
                ),
                ModuleError::E_INVALIDARG,
            ));
        }
        if owner {
            // Shared by a module listed earlier: this one owns it.
            other.owned = true;
            other.module = self.entry.name.to_string();
            other.inherit = inherit;
        }
        Ok(Section {
            id,
            _type: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section whose own check (after serde) names keys inside it.
    #[derive(Debug, serde::Deserialize)]
    #[serde(try_from = "RawChecked")]
    struct Checked;

    #[derive(serde::Deserialize)]
    struct RawChecked {
        rules: Vec<String>,
    }

    impl TryFrom<RawChecked> for Checked {
        type Error = String;
        fn try_from(raw: RawChecked) -> Result<Self, String> {
            match raw.rules.iter().position(|r| r == "bad") {
                // Wrapped by an outer message, around a nested key.
                Some(i) => Err(format!(
                    "in the section: {}",
                    error_at_key(&format!("rules[{i}]"), error_at_key("", "a bad rule"))
                )),
                None => Ok(Checked),
            }
        }
    }

    #[test]
    fn a_check_after_serde_names_its_key() {
        let value: toml::Value = toml::from_str(r#"rules = ["good", "bad"]"#).unwrap();
        let (path, message) = parse_section::<Checked>(value).unwrap_err();
        assert_eq!(path, "rules[1]");
        assert_eq!(message, "in the section: a bad rule");
    }
}
