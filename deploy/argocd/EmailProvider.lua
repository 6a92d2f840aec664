-- Argo CD health check for mailroom.dev/EmailProvider and
-- mailroom.dev/ClusterEmailProvider
-- (resource.customizations.health.mailroom.dev_EmailProvider and
-- ..._ClusterEmailProvider in argocd-cm). Healthy when Ready; Degraded when
-- Stalled (a spec, credential or service answer that no retry fixes);
-- Suspended with spec.suspend; Progressing otherwise.
local hs = { status = "Progressing", message = "waiting for the mailroom controller" }
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: its messages wait"
  return hs
end
if obj.status == nil then
  return hs
end

local function condition(wanted)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "the controller has not seen the latest spec yet"
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
end
return hs
