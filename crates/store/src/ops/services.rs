//! Ops on services: creation and versioned update (both checking the name
//! and allocating the endpoint), update progress, removal (releasing its
//! VIP).

use bollard::models::ServiceUpdateStatus;

use super::{not_found, out_of_sequence, version};
use crate::error::{Kind, StoreError};
use crate::models::Service;
use crate::objects::{service_name, version_of};
use crate::state::State;

impl State {
    pub(super) fn apply_create_service(
        &mut self,
        index: u64,
        mut svc: Service,
    ) -> Result<(), StoreError> {
        let id = svc.id.clone().unwrap_or_default();
        self.check_privilege(&svc, None)?;
        self.check_name_free(&svc, None)?;
        self.check_data_refs(&svc)?;
        self.allocate_endpoint(&mut svc)?;
        svc.version = version(index);
        self.service_names
            .insert(service_name(&svc).to_string(), id.clone());
        self.share_service_spec(&svc);
        self.services.insert(id, svc);
        Ok(())
    }

    /// Replaces the service if the writer read version `expected`.
    pub(super) fn apply_update_service(
        &mut self,
        index: u64,
        expected: u64,
        mut service: Service,
    ) -> Result<(), StoreError> {
        let id = service.id.clone().unwrap_or_default();
        let current = self
            .services
            .get(&id)
            .ok_or_else(|| not_found(Kind::Service, &id))?;
        let current = version_of(&current.version);
        if current != expected {
            return Err(out_of_sequence(Kind::Service, &id, expected, current));
        }
        self.check_privilege(&service, self.services.get(&id))?;
        self.check_name_free(&service, Some(&id))?;
        self.check_data_refs(&service)?;
        self.allocate_endpoint(&mut service)?;
        service.version = version(index);
        if let Some(before) = self.services.get(&id) {
            self.forget_name(service_name(before).to_string(), &id);
        }
        self.service_names
            .insert(service_name(&service).to_string(), id.clone());
        self.share_service_spec(&service);
        self.services.insert(id, service);
        Ok(())
    }

    /// The swarm's `--allow-privileged`, checked in the log's order: a
    /// create cannot slip past a `swarm update` that turns it off.
    fn check_privilege(&self, svc: &Service, current: Option<&Service>) -> Result<(), StoreError> {
        let Some(spec) = svc.spec.as_ref() else {
            return Ok(());
        };
        match crate::host_options::privilege_refusal(self.cluster.as_ref(), spec, current) {
            Some(why) => Err(StoreError::Invalid(why)),
            None => Ok(()),
        }
    }

    /// The updater's progress: no version check, the spec untouched.
    pub(super) fn apply_set_update_status(
        &mut self,
        index: u64,
        id: &str,
        status: Option<ServiceUpdateStatus>,
    ) -> Result<(), StoreError> {
        let svc = self
            .services
            .get_mut(id)
            .ok_or_else(|| not_found(Kind::Service, id))?;
        svc.update_status = status;
        svc.version = version(index);
        Ok(())
    }

    /// The service goes with its VIP; its tasks stay for the reaper.
    pub(super) fn apply_remove_service(&mut self, id: &str) -> Result<(), StoreError> {
        let svc = self
            .services
            .remove(id)
            .ok_or_else(|| not_found(Kind::Service, id))?;
        self.specs.remove(id);
        self.forget_name(service_name(&svc).to_string(), id);
        self.release_service(&svc);
        Ok(())
    }

    fn forget_name(&mut self, name: String, id: &str) {
        if self
            .service_names
            .get(&name)
            .is_some_and(|owner| owner == id)
        {
            self.service_names.remove(&name);
        }
    }

    /// Refuses a name another service (any but `itself`) has.
    fn check_name_free(&self, svc: &Service, itself: Option<&str>) -> Result<(), StoreError> {
        let name = service_name(svc);
        let taken = self
            .service_names
            .get(name)
            .is_some_and(|owner| Some(owner.as_str()) != itself);
        if taken {
            return Err(StoreError::NameTaken {
                kind: Kind::Service,
                name: name.to_string(),
            });
        }
        Ok(())
    }
}
