"""The ingress-nginx addon as its baremetal manifest installs it (its objects: emu.addons.ingress.documents), and
which Ingresses it serves: the IngressClass the API server admits an Ingress with, and whether that class is
ingress-nginx's."""
from __future__ import annotations

from emu.addons.ingress.documents import NAME, NAMESPACE, SERVED_BY, addon_documents  # noqa: F401 (for importers)
from emu.addons.ingress.model import NGINX_CONTROLLER, Ingress, IngressClass
from emu.addons.ingress.parse import LEGACY_CLASS_ANNOTATION


def admitted_class(ing: Ingress, classes: tuple[IngressClass, ...]) -> str | None:
    """spec.ingressClassName as the API server stores it: as written, or set at creation by the DefaultIngressClass
    admission plugin when neither it nor the legacy annotation is given and one IngressClass is the default."""
    if ing.class_name or LEGACY_CLASS_ANNOTATION in ing.annotations:
        return ing.class_name
    return next((c.name for c in classes if c.default), None)


def served_class(ing: Ingress, classes: tuple[IngressClass, ...]) -> bool:
    """Does ingress-nginx (watching IngressClasses with controller k8s.io/ingress-nginx) serve this Ingress?
    Named class: that IngressClass must be ingress-nginx's.  No class: the default IngressClass must be."""
    ours = {c.name for c in classes if c.controller == NGINX_CONTROLLER}
    if ing.class_name:
        return ing.class_name in ours
    return any(c.default and c.name in ours for c in classes)
