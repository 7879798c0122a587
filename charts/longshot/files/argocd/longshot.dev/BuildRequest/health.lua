-- Argo CD health check for longshot.dev/BuildRequest
-- (argocd-cm key resource.customizations.health.longshot.dev_BuildRequest; see docs/gitops.md).
--
-- The health of a build: Healthy when it finished and passed (Ready=True), Degraded when it failed for good or waits
-- for a person to fix something (Stalled=True: tests failed, plan rejected, tasks failed, budget spent,
-- configuration, credentials), Suspended while spec.suspend is true or while it waits only for a person's answer or
-- approval, Progressing otherwise (planning, working, finalizing, or a spec edit the
-- operator has not observed yet).
-- It reads only the Kubernetes-convention conditions (Ready, Stalled, Reconciling, Suspended) and
-- metadata.generation against status.observedGeneration, as kstatus (Flux, kpt) does.
-- The body below is the same for BuildRequest, AgentTask and MergeJob (a test keeps the three identical).
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.message
  if text == nil or text == "" then
    text = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

local generation = obj.metadata.generation

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

-- A status written for an older spec says nothing about the current one (kstatus does the same).
local observed = obj.status.observedGeneration
if observed == nil then
  local r = condition("Ready")
  if r ~= nil then
    observed = r.observedGeneration
  end
end
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = obj.kind .. " generation is " .. generation .. ", but the operator has observed generation " .. observed
  return hs
end

local suspended = condition("Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = describe(suspended, "spec.suspend is true")
  return hs
end

-- Waiting only for a person's answer or approval (Ready=False with AwaitingInput, QuestionAsked or AwaitingApproval,
-- and nothing reconciling): Suspended, as Argo CD shows a Rollout waiting for promotion. Not Degraded: it is not a
-- failure, and the operator sets Stalled=False for it (kstatus: InProgress).
local waiting = {AwaitingInput = true, QuestionAsked = true, AwaitingApproval = true}
local ready0 = condition("Ready")
local reconciling0 = condition("Reconciling")
if ready0 ~= nil and ready0.status == "False" and waiting[ready0.reason] and
    (reconciling0 == nil or reconciling0.status ~= "True") then
  hs.status = "Suspended"
  hs.message = describe(ready0, "waiting for a person")
  return hs
end

-- Stalled=True: a terminal failure, or waiting for a person to fix something (configuration, credentials, budget).
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator's conditions")
return hs
