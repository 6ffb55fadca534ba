"""The fields of every kind emu reads, as the API server's strict field validation knows them: an unknown field is an
error (`unknown field "spec.bogusField"`), whether or not emu uses the field.

`kubectl apply` validates strictly by default since 1.27 (fieldValidation=Strict): the server decodes the object
against the kind's Go type and reports every JSON key the type has no field for, by its path
(`spec.containers[0].bogus`), in `metadata` too; `status` is accepted and ignored on create.  The tables below are the
json field names of the upstream types, nested where the type is a struct:

- k8s.io/apimachinery pkg/apis/meta/v1/types.go: ObjectMeta, OwnerReference, LabelSelector
- k8s.io/api core/v1/types.go: Pod, PodSpec, Container, ContainerPort, EnvVar, Probe, Volume, SecurityContext,
  Service, ServiceSpec, ServicePort, Namespace, Secret, ConfigMap, Endpoints
- k8s.io/api apps/v1/types.go: Deployment, DeploymentSpec, DeploymentStrategy
- k8s.io/api networking/v1/types.go: NetworkPolicy (+ peers, ports, IPBlock), Ingress, IngressClass
- k8s.io/api discovery/v1/types.go: EndpointSlice
- k8s-network-plumbing-wg multi-net-spec: NetworkAttachmentDefinition (spec.config)
- emu's own Cluster (emu.dev/v1alpha1): the fields emu.model.clusterspec and emu.model.nodesettings read, and
  under `spec.cni` those of the pod networks (checked with the network's own spec: emu.model.clusterspec).

A field is ANY when its value is free-form (maps of labels, quantities, IntOrString, RawExtension) or a deep
struct emu does not model (affinity, volume sources other than the common ones): its keys are not checked.
Differences: values are not type-checked here (each kind's parser does that); the Cluster's `spec.cni` accepts the
fields of every plugin (emu.model.clusterspec reports one given to the wrong plugin).
"""
from __future__ import annotations

from typing import Any, Mapping, Union


ANY = None  # any value; keys below it are not checked
Field = Union[None, Mapping[str, "Field"], list]  # list: [schema of each item]

OWNER_REFERENCE = {k: ANY for k in ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")}
OBJECT_META: Mapping[str, Field] = {
    **{k: ANY for k in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
                        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
                        "annotations", "finalizers", "managedFields")},
    "ownerReferences": [OWNER_REFERENCE],
}
LABEL_SELECTOR: Mapping[str, Field] = {
    "matchLabels": ANY, "matchExpressions": [{"key": ANY, "operator": ANY, "values": ANY}]}
OBJECT_REFERENCE = {k: ANY for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                                     "fieldPath")}
KEY_SELECTOR = {"name": ANY, "key": ANY, "optional": ANY}
ENV_VAR: Mapping[str, Field] = {"name": ANY, "value": ANY, "valueFrom": {
    "fieldRef": {"apiVersion": ANY, "fieldPath": ANY},
    "resourceFieldRef": {"containerName": ANY, "resource": ANY, "divisor": ANY},
    "configMapKeyRef": KEY_SELECTOR, "secretKeyRef": KEY_SELECTOR, "fileKeyRef": ANY}}
ENV_FROM: Mapping[str, Field] = {"prefix": ANY, "configMapRef": {"name": ANY, "optional": ANY},
                                 "secretRef": {"name": ANY, "optional": ANY}}
HANDLER: Mapping[str, Field] = {
    "exec": {"command": ANY},
    "httpGet": {"path": ANY, "port": ANY, "host": ANY, "scheme": ANY,
                "httpHeaders": [{"name": ANY, "value": ANY}]},
    "tcpSocket": {"port": ANY, "host": ANY},
    "grpc": {"port": ANY, "service": ANY},
}
PROBE: Mapping[str, Field] = {**HANDLER, **{k: ANY for k in (
    "initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold",
    "terminationGracePeriodSeconds")}}
LIFECYCLE: Mapping[str, Field] = {"postStart": {**HANDLER, "sleep": {"seconds": ANY}},
                                  "preStop": {**HANDLER, "sleep": {"seconds": ANY}}, "stopSignal": ANY}
SE_LINUX = {k: ANY for k in ("user", "role", "type", "level")}
WINDOWS = {k: ANY for k in ("gmsaCredentialSpecName", "gmsaCredentialSpec", "runAsUserName", "hostProcess")}
PROFILE = {"type": ANY, "localhostProfile": ANY}
CONTAINER_SECURITY: Mapping[str, Field] = {
    "capabilities": {"add": ANY, "drop": ANY}, "seLinuxOptions": SE_LINUX, "windowsOptions": WINDOWS,
    "seccompProfile": PROFILE, "appArmorProfile": PROFILE,
    **{k: ANY for k in ("privileged", "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
                        "allowPrivilegeEscalation", "procMount")}}
POD_SECURITY: Mapping[str, Field] = {
    "seLinuxOptions": SE_LINUX, "windowsOptions": WINDOWS, "seccompProfile": PROFILE, "appArmorProfile": PROFILE,
    "sysctls": [{"name": ANY, "value": ANY}],
    **{k: ANY for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups", "supplementalGroupsPolicy",
                        "fsGroup", "fsGroupChangePolicy", "seLinuxChangePolicy")}}
CONTAINER_PORT = {k: ANY for k in ("name", "hostPort", "containerPort", "protocol", "hostIP")}
CONTAINER: Mapping[str, Field] = {
    **{k: ANY for k in ("name", "image", "command", "args", "workingDir", "restartPolicy", "terminationMessagePath",
                        "terminationMessagePolicy", "imagePullPolicy", "stdin", "stdinOnce", "tty")},
    "ports": [CONTAINER_PORT], "env": [ENV_VAR], "envFrom": [ENV_FROM],
    "resources": {"limits": ANY, "requests": ANY, "claims": [{"name": ANY, "request": ANY}]},
    "resizePolicy": [{"resourceName": ANY, "restartPolicy": ANY}],
    "restartPolicyRules": ANY,
    "volumeMounts": [{k: ANY for k in ("name", "readOnly", "recursiveReadOnly", "mountPath", "subPath",
                                       "mountPropagation", "subPathExpr")}],
    "volumeDevices": [{"name": ANY, "devicePath": ANY}],
    "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE, "lifecycle": LIFECYCLE,
    "securityContext": CONTAINER_SECURITY,
}
KEY_TO_PATH = [{"key": ANY, "path": ANY, "mode": ANY}]
VOLUME: Mapping[str, Field] = {
    "name": ANY,
    "emptyDir": {"medium": ANY, "sizeLimit": ANY},
    "hostPath": {"path": ANY, "type": ANY},
    "configMap": {"name": ANY, "items": KEY_TO_PATH, "defaultMode": ANY, "optional": ANY},
    "secret": {"secretName": ANY, "items": KEY_TO_PATH, "defaultMode": ANY, "optional": ANY},
    "persistentVolumeClaim": {"claimName": ANY, "readOnly": ANY},
    # the other VolumeSource members, their insides not modelled
    **{k: ANY for k in ("projected", "downwardAPI", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs",
                        "iscsi", "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
                        "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume",
                        "scaleIO", "storageos", "csi", "ephemeral", "image")},
}
POD_SPEC: Mapping[str, Field] = {
    "volumes": [VOLUME], "initContainers": [CONTAINER], "containers": [CONTAINER],
    "ephemeralContainers": [{**CONTAINER, "targetContainerName": ANY}],
    "securityContext": POD_SECURITY,
    "imagePullSecrets": [{"name": ANY}],
    "tolerations": [{k: ANY for k in ("key", "operator", "value", "effect", "tolerationSeconds")}],
    "hostAliases": [{"ip": ANY, "hostnames": ANY}],
    "dnsConfig": {"nameservers": ANY, "searches": ANY, "options": [{"name": ANY, "value": ANY}]},
    "readinessGates": [{"conditionType": ANY}],
    "topologySpreadConstraints": [{k: ANY for k in (
        "maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector", "minDomains", "nodeAffinityPolicy",
        "nodeTaintsPolicy", "matchLabelKeys")}],
    "os": {"name": ANY},
    "schedulingGates": [{"name": ANY}],
    "resourceClaims": [{"name": ANY, "resourceClaimName": ANY, "resourceClaimTemplateName": ANY}],
    "resources": {"limits": ANY, "requests": ANY, "claims": ANY},
    **{k: ANY for k in (
        "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
        "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
        "hostPID", "hostIPC", "shareProcessNamespace", "hostname", "subdomain", "affinity", "schedulerName",
        "priorityClassName", "priority", "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
        "setHostnameAsFQDN", "hostUsers", "hostnameOverride")},
}
POD_TEMPLATE: Mapping[str, Field] = {"metadata": OBJECT_META, "spec": POD_SPEC}
DEPLOYMENT_SPEC: Mapping[str, Field] = {
    "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
    "strategy": {"type": ANY, "rollingUpdate": {"maxUnavailable": ANY, "maxSurge": ANY}},
    **{k: ANY for k in ("replicas", "minReadySeconds", "revisionHistoryLimit", "paused", "progressDeadlineSeconds")},
}
SERVICE_SPEC: Mapping[str, Field] = {
    "ports": [{k: ANY for k in ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")}],
    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": ANY}},
    **{k: ANY for k in (
        "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity", "loadBalancerIP",
        "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy", "healthCheckNodePort",
        "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts",
        "loadBalancerClass", "internalTrafficPolicy", "trafficDistribution")},
}
NETPOL_PEER: Mapping[str, Field] = {"podSelector": LABEL_SELECTOR, "namespaceSelector": LABEL_SELECTOR,
                                    "ipBlock": {"cidr": ANY, "except": ANY}}
NETPOL_PORT = {"protocol": ANY, "port": ANY, "endPort": ANY}
NETPOL_SPEC: Mapping[str, Field] = {
    "podSelector": LABEL_SELECTOR, "policyTypes": ANY,
    "ingress": [{"from": [NETPOL_PEER], "ports": [NETPOL_PORT]}],
    "egress": [{"to": [NETPOL_PEER], "ports": [NETPOL_PORT]}],
}
TYPED_LOCAL_REF = {"apiGroup": ANY, "kind": ANY, "name": ANY}
INGRESS_BACKEND: Mapping[str, Field] = {"service": {"name": ANY, "port": {"name": ANY, "number": ANY}},
                                        "resource": TYPED_LOCAL_REF}
INGRESS_SPEC: Mapping[str, Field] = {
    "ingressClassName": ANY, "defaultBackend": INGRESS_BACKEND,
    "tls": [{"hosts": ANY, "secretName": ANY}],
    "rules": [{"host": ANY, "http": {"paths": [{"path": ANY, "pathType": ANY, "backend": INGRESS_BACKEND}]}}],
}
INGRESS_CLASS_SPEC: Mapping[str, Field] = {
    "controller": ANY, "parameters": {**TYPED_LOCAL_REF, "scope": ANY, "namespace": ANY}}
ENDPOINT_ADDRESS = {"ip": ANY, "hostname": ANY, "nodeName": ANY, "targetRef": OBJECT_REFERENCE}
ENDPOINT_PORT = {"name": ANY, "port": ANY, "protocol": ANY, "appProtocol": ANY}
SLICE_ENDPOINT: Mapping[str, Field] = {
    "addresses": ANY, "conditions": {"ready": ANY, "serving": ANY, "terminating": ANY}, "hostname": ANY,
    "targetRef": OBJECT_REFERENCE, "deprecatedTopology": ANY, "nodeName": ANY, "zone": ANY,
    "hints": {"forZones": [{"name": ANY}], "forNodes": [{"name": ANY}]},
}
# emu's own kind (emu.model.clusterspec CLUSTER_DEFAULTS, emu.model.nodesettings, each network's spec.cni fields)
NODE_SETTINGS = {"mtu": ANY, "sysctls": ANY}
CLUSTER_SPEC: Mapping[str, Field] = {
    "nodes": [{"name": ANY, **NODE_SETTINGS}],  # a count, or names and {name, mtu, sysctls} entries
    "nodeSettings": NODE_SETTINGS,
    "cni": ANY,  # each pod network's own fields: emu.model.clusterspec checks them against the network's spec
    "proxy": {"mode": ANY, "masqueradeAll": ANY},
    **{k: ANY for k in ("podCIDR", "serviceCIDR", "nodeCIDRMaskSize", "nodeNetwork", "mtu", "loadBalancerPool",
                        "iptablesBackend", "externalClients")},
}


def _kind(**fields: Field) -> Mapping[str, Field]:
    """A top-level object: TypeMeta, ObjectMeta, the kind's own fields, and status (accepted, ignored)."""
    return {"apiVersion": ANY, "kind": ANY, "metadata": OBJECT_META, "status": ANY, **fields}


KINDS: Mapping[str, Mapping[str, Field]] = {
    "Cluster": _kind(spec=CLUSTER_SPEC),
    "Namespace": _kind(spec={"finalizers": ANY}),
    "Pod": _kind(spec=POD_SPEC),
    "Deployment": _kind(spec=DEPLOYMENT_SPEC),
    "Service": _kind(spec=SERVICE_SPEC),
    "Endpoints": _kind(subsets=[{"addresses": [ENDPOINT_ADDRESS], "notReadyAddresses": [ENDPOINT_ADDRESS],
                                 "ports": [ENDPOINT_PORT]}]),
    "EndpointSlice": _kind(addressType=ANY, endpoints=[SLICE_ENDPOINT], ports=[ENDPOINT_PORT]),
    "NetworkPolicy": _kind(spec=NETPOL_SPEC),
    "Ingress": _kind(spec=INGRESS_SPEC),
    "IngressClass": _kind(spec=INGRESS_CLASS_SPEC),
    "Secret": _kind(data=ANY, stringData=ANY, type=ANY, immutable=ANY),
    "ConfigMap": _kind(data=ANY, binaryData=ANY, immutable=ANY),
    "NetworkAttachmentDefinition": _kind(spec={"config": ANY}),
}


def unknown_fields(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field path, message) for every key of `body` its kind's schema does not have, as the API server's strict
    decoding words it: `unknown field "spec.containers[0].bogus"`.  A kind emu does not read has no schema here
    (emu.model.loader reports the kind itself: emu.model.kinds has no reader for it)."""
    schema = KINDS.get(str(body.get("kind", "")))
    out: list[tuple[str, str]] = []
    if schema is not None:
        _walk(body, schema, "", out)
    return out


def _walk(value: Any, schema: Field, path: str, out: list[tuple[str, str]]) -> None:
    if schema is ANY:
        return
    if isinstance(schema, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, schema[0], f"{path}[{i}]", out)
        return
    if not isinstance(value, dict):
        return  # a wrong type is the kind's parser's to report
    for key, v in value.items():
        fld = f"{path}.{key}" if path else str(key)
        if key not in schema:
            out.append((fld, f'unknown field "{fld}"'))
        else:
            _walk(v, schema[key], fld, out)
